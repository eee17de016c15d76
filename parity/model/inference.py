"""What both frameworks' T3 inference loops share: settings, the per-step record, the result.

Both loops follow upstream chatterbox-tts 0.1.7's `T3.inference`, stage by stage:

    speech logits (2 CFG rows) -> CFG combine -> analyzer step -> processors -> sampling

and record every stage, so a model trace can say at which stage, and at which step, the MLX
side first parts from the PyTorch one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..replay import state_of
from .processors import ProcessorSettings
from .sampling import SeededUniforms, pick_token

STAGES = ("attention", "logits", "cfg", "analyzer", "processors", "sampling")


@dataclass(frozen=True)
class GenerationSettings:
    cfg_weight: float = 0.5
    processors: ProcessorSettings = field(default_factory=ProcessorSettings)
    max_new_tokens: int = 1000
    seed: int = 0  # the shared sampler's seed
    sampler: str = "shared"  # "shared": seeded uniforms + inverse CDF, equal across frameworks; or "native"
    analyzer: bool = True

    def __post_init__(self):
        if self.sampler not in ("shared", "native"):
            raise ValueError(f"sampler must be 'shared' or 'native', got {self.sampler!r}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


@dataclass
class StepRecord:
    """Everything one decoding step produced, as float32/int numpy data."""

    attns: Optional[np.ndarray]  # (3, Lq, Lk): the aligned heads, batch row 0
    logits_raw: np.ndarray  # (2, V): speech logits, conditional and unconditional rows
    logits_cfg: np.ndarray  # (1, V)
    logits_analyzed: np.ndarray  # (1, V)
    logits_processed: np.ndarray  # (1, V)
    prev_token: int
    u: Optional[float]  # the shared sampler's draw (None with a native sampler or teacher forcing)
    token: int
    state: Optional[dict] = None
    result: Optional[dict] = None
    margins: Optional[dict] = None


@dataclass
class Generation:
    tokens: list[int]  # sampled speech tokens, without the leading BOS; ends with EOS if one was sampled
    text_tokens_slice: tuple[int, int]
    steps: list[StepRecord] = field(default_factory=list)  # empty unless recording
    alignment: Optional[np.ndarray] = None  # the analyzer's accumulated alignment at the end


def step_record(analyzer, to_numpy, attns, raw, cfg, analyzed, processed, prev_token: int, u, token: int) -> StepRecord:
    """One step's record; `attns` is already numpy (or None), the logits are converted here."""
    return StepRecord(
        attns=attns, logits_raw=to_numpy(raw), logits_cfg=to_numpy(cfg), logits_analyzed=to_numpy(analyzed),
        logits_processed=to_numpy(processed), prev_token=prev_token, u=u, token=token,
        state=state_of(analyzer) if analyzer is not None else None,
        result=asdict(analyzer.results[-1]) if analyzer is not None else None,
        margins=asdict(analyzer.margins[-1]) if analyzer is not None else None,
    )


class TokenChooser:
    """Chooses each step's token: teacher-forced, shared seeded sampler, or native sampling."""

    def __init__(self, settings: GenerationSettings, native, forced_tokens: Optional[list[int]] = None):
        self.forced = forced_tokens
        self.uniforms = SeededUniforms(settings.seed) if settings.sampler == "shared" else None
        self.native = native

    def __call__(self, step: int, processed) -> tuple[int, Optional[float]]:
        if self.forced is not None:
            if step >= len(self.forced):
                raise IndexError(f"teacher forcing ran out of tokens at step {step}")
            return int(self.forced[step]), None
        if self.uniforms is None:
            return int(self.native(processed)), None
        u = self.uniforms.next()
        return pick_token(np.asarray(processed, dtype=np.float32).reshape(-1), u), u
