"""Stage-by-stage comparison of an MLX T3 run with a PyTorch recording, and a KL summary.

For each step, in pipeline order, the first stage outside tolerance is the divergence:
attention (the three aligned heads) -> logits (both CFG rows) -> cfg -> analyzer (decisions,
state, edited logits) -> processors (masked set and values) -> sampling (the token). The
float tolerances cover float32 rounding between frameworks (measured on the tiny model:
attention 3e-6, logits 6e-6); decisions, masks and tokens must be equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..compare import MARGIN_DECISIONS
from .inference import STAGES, StepRecord
from .sampling import pick_token
from .trace import ModelTrace

ATTENTION_ATOL = 1e-5
LOGITS_ATOL = 1e-4


@dataclass
class StageDivergence:
    trace: str
    step: int
    stage: str
    detail: str

    def __str__(self) -> str:
        return (f"MLX T3 diverged from the PyTorch recording {self.trace!r} at step {self.step}, "
                f"stage {self.stage} (pipeline: {' -> '.join(STAGES)}): {self.detail}")


def _max_abs(reference: np.ndarray, port: np.ndarray) -> tuple[float, tuple]:
    finite = np.isfinite(reference) & np.isfinite(port)
    delta = np.zeros(reference.shape)
    delta[finite] = np.abs(reference[finite].astype(np.float64) - port[finite])
    where = np.unravel_index(int(np.argmax(delta)), delta.shape)
    return float(delta[where]), tuple(int(i) for i in where)


def _close(name: str, reference: np.ndarray, port: np.ndarray, atol: float) -> Optional[str]:
    if reference.shape != port.shape:
        return f"{name} shape {reference.shape} vs {port.shape}"
    mask_ref, mask_port = ~np.isfinite(reference), ~np.isfinite(port)
    if not np.array_equal(mask_ref, mask_port) or not np.array_equal(reference[mask_ref], port[mask_port]):
        differ = np.argwhere((mask_ref != mask_port) | (mask_ref & (reference != port)))
        return f"{name}: non-finite entries differ at {differ[:5].tolist()} ({len(differ)} in all)"
    worst, where = _max_abs(reference, port)
    if worst > atol:
        return f"{name} max |d| {worst:.3g} > {atol:g} at {list(where)}: reference {reference[where]!r}, port {port[where]!r}"
    return None


def _analyzer_detail(reference: StepRecord, port: StepRecord) -> Optional[str]:
    for group in ("result", "state"):
        expected, got = getattr(reference, group), getattr(port, group)
        for key in expected:
            if expected[key] != got[key]:
                return (f"{group}.{key}: reference {expected[key]!r}, port {got[key]!r} "
                        f"(margins: reference {reference.margins}, port {port.margins})")
    for key in MARGIN_DECISIONS:
        if reference.margins[key] != port.margins[key]:
            return f"decision {key}: reference {reference.margins[key]!r}, port {port.margins[key]!r}"
    return None


def first_divergence(trace: ModelTrace, steps: list[StepRecord], partial: bool = False) -> Optional[StageDivergence]:
    """The first (step, stage) where `steps` (an MLX run, free-running or teacher-forced on the
    recorded tokens) leaves the recording's tolerance, or None. With `partial`, a run that
    stops early (on purpose: a few steps are enough) is compared on the steps it has."""
    for k in range(min(len(trace), len(steps))):
        for stage, detail in _stage_details(trace.step(k), steps[k]):
            if detail:
                return StageDivergence(trace.name, k, stage, detail)
    if len(steps) != len(trace) and not (partial and len(steps) < len(trace)):
        stage = "sampling"
        return StageDivergence(trace.name, min(len(steps), len(trace)), stage,
                               f"the run has {len(steps)} steps, the recording {len(trace)}")
    return None


def _stage_details(ref: StepRecord, got: StepRecord):
    """(stage, what differs or None), stage by stage in pipeline order, each computed on demand."""
    yield "attention", _close("attention", ref.attns, got.attns, ATTENTION_ATOL)
    yield "logits", _close("speech logits", ref.logits_raw, got.logits_raw, LOGITS_ATOL)
    yield "cfg", _close("CFG logits", ref.logits_cfg, got.logits_cfg, LOGITS_ATOL)
    yield "analyzer", _analyzer_detail(ref, got) or _close("analyzed logits", ref.logits_analyzed, got.logits_analyzed, LOGITS_ATOL)
    yield "processors", _close("processed logits", ref.logits_processed, got.logits_processed, LOGITS_ATOL)
    yield "sampling", _sampling_detail(ref, got)


def _sampling_detail(ref: StepRecord, got: StepRecord) -> Optional[str]:
    # Teacher-forced runs take the recorded token; ask what the shared sampler would pick.
    token = got.token if got.u is not None or ref.u is None else pick_token(got.logits_processed.reshape(-1), ref.u)
    if token != ref.token:
        return f"token: reference {ref.token}, port {token} (u = {ref.u!r})"
    return None


@dataclass
class KLReport:
    """llama.cpp-style summary of two models' next-token distributions (here: post-CFG)."""

    kl: list[float] = field(default_factory=list)
    top1_same: list[bool] = field(default_factory=list)

    def add(self, reference_logits: np.ndarray, port_logits: np.ndarray) -> None:
        p, q = (_log_softmax(x.astype(np.float64).reshape(-1)) for x in (reference_logits, port_logits))
        self.kl.append(float(np.sum(np.exp(p) * (p - q))))
        self.top1_same.append(int(np.argmax(p)) == int(np.argmax(q)))

    @property
    def steps(self) -> int:
        return len(self.kl)

    def __str__(self) -> str:
        if not self.kl:
            return "KL divergence: no steps"
        return (f"KL divergence over {self.steps} steps: mean {np.mean(self.kl):.3e}, max {np.max(self.kl):.3e}; "
                f"top-1 agreement {100.0 * np.mean(self.top1_same):.2f}%")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())
