"""Drive any analyzer with the shared surface through a trace, one step at a time.

An analyzer class declares the arrays it takes with a class attribute `array_api`
("torch" or "mlx"; ports without it are assumed to be MLX). Inputs are kept as float32
numpy arrays holding values exact in the trace's dtype, and cast right before each step.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from .analyzer.common import STATE_FIELDS, AnalyzerInputError
from .compare import Divergence, StepOutcome, compare_steps
from .fixtures import AnalyzerTrace


class TorchArrays:
    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    def from_numpy(self, array: np.ndarray, dtype: str):
        return self.torch.from_numpy(np.array(array, dtype=np.float32)).to(getattr(self.torch, dtype))

    def to_numpy(self, value) -> np.ndarray:
        return value.detach().to(self.torch.float32).cpu().numpy()

    def dtype_name(self, value) -> str:
        return str(value.dtype).rsplit(".", 1)[-1]


class MlxArrays:
    name = "mlx"

    def __init__(self):
        import mlx.core as mx

        self.mx = mx

    def from_numpy(self, array: np.ndarray, dtype: str):
        return self.mx.array(np.asarray(array, dtype=np.float32)).astype(getattr(self.mx, dtype))

    def to_numpy(self, value) -> np.ndarray:
        return np.array(value.astype(self.mx.float32))

    def dtype_name(self, value) -> str:
        return str(value.dtype).rsplit(".", 1)[-1]


ARRAY_APIS: dict[str, Callable[[], object]] = {"torch": TorchArrays, "mlx": MlxArrays}


def array_api_for(cls, override: Optional[str] = None):
    name = override or getattr(cls, "array_api", "mlx")
    if name not in ARRAY_APIS:
        raise ValueError(f"unknown array API {name!r} for {cls.__name__}; choose one of {sorted(ARRAY_APIS)}")
    return ARRAY_APIS[name]()


def load_class(spec: str):
    """`package.module:ClassName` -> the class, with a clear error for a bad spec."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"--impl takes module:Class (e.g. my_port.analyzer:AlignmentStreamAnalyzer), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--impl {spec}: cannot import {module_name!r} ({e})") from None
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ValueError(f"--impl {spec}: module {module_name!r} has no {class_name!r}") from None


def _plain(value):
    """Python scalars from framework scalars (0-d tensors, mx scalars, numpy ints)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def state_of(analyzer) -> dict:
    state = {name: _plain(getattr(analyzer, name)) for name in STATE_FIELDS}
    state["generated_tokens"] = [int(t) for t in state["generated_tokens"]]
    return state


def _record(analyzer, name: str) -> Optional[dict]:
    records = getattr(analyzer, name, None)
    if not records:
        return None
    record = records[-1]
    return dataclasses.asdict(record) if dataclasses.is_dataclass(record) else dict(record)


def error_label(error: Exception) -> str:
    code = getattr(error, "code", None)
    return f"{type(error).__name__}[{code}]" if code else type(error).__name__


def run_step(analyzer, api, attn, logits, prev_token, dtype: str, catch=(AnalyzerInputError,)) -> StepOutcome:
    """Feed one step's inputs; capture everything the analyzer produced, or the error if it
    is one of `catch` (anything else propagates with its traceback)."""
    analyzer.last_aligned_attns = [api.from_numpy(head, dtype) for head in attn]
    try:
        out = analyzer.step(api.from_numpy(logits, dtype), next_token=prev_token)
    except catch as e:
        return StepOutcome(state=state_of(analyzer), error=error_label(e), error_message=str(e))
    return StepOutcome(
        state=state_of(analyzer),
        logits=api.to_numpy(out),
        logits_dtype=api.dtype_name(out),
        alignment=api.to_numpy(analyzer.alignment),
        result=_record(analyzer, "results"),
        margins=_record(analyzer, "margins"),
    )


def golden_outcome(trace: AnalyzerTrace, k: int) -> StepOutcome:
    step = trace.steps[k]
    return StepOutcome(
        state=step.state,
        logits=trace.logits_out[k : k + 1],
        logits_dtype=trace.config.dtype,
        alignment=trace.alignment[: step.alignment_rows],
        result=step.result,
        margins=step.margins,
    )


def new_analyzer(cls, trace_config):
    return cls(text_tokens_slice=tuple(trace_config.text_tokens_slice), eos_idx=trace_config.eos_idx)


def replay_trace(trace: AnalyzerTrace, cls, api=None) -> Optional[Divergence]:
    """Replay a golden trace through `cls`; the first step that differs, or None."""
    api = api or array_api_for(cls)
    analyzer = new_analyzer(cls, trace.config)
    for k, step in enumerate(trace.steps):
        port = run_step(analyzer, api, trace.attns[k], trace.logits_in[k : k + 1], step.prev_token, trace.config.dtype)
        reference = golden_outcome(trace, k)
        diffs = compare_steps(reference, port)
        if diffs:
            return Divergence(f"fixture {trace.name!r}", k, diffs, reference, port)
    return None


@dataclasses.dataclass
class TraceInputs:
    """The inputs of a trace without any recorded outcome (generated cases, scenarios)."""

    text_tokens_slice: tuple[int, int]
    eos_idx: int
    dtype: str
    attns: Sequence[np.ndarray]  # per step (3, Lq, Lk)
    logits: Sequence[np.ndarray]  # per step (1, V)
    prev_tokens: Sequence[Optional[int]]


def run_trace(inputs: TraceInputs, cls, api=None, catch=(AnalyzerInputError,)) -> Iterable[StepOutcome]:
    """Outcomes step by step; stops after the first step that raised."""
    api = api or array_api_for(cls)
    analyzer = new_analyzer(cls, inputs)
    for attn, logits, token in zip(inputs.attns, inputs.logits, inputs.prev_tokens):
        outcome = run_step(analyzer, api, attn, logits, token, inputs.dtype, catch)
        yield outcome
        if outcome.error:
            return


def compare_live(inputs: TraceInputs, reference_cls, port_cls, source="generated trace", port_api=None) -> Optional[Divergence]:
    """Run both analyzers over the same inputs; the first step that differs, or None."""
    steps = zip(run_trace(inputs, reference_cls), run_trace(inputs, port_cls, port_api))
    for k, (reference, port) in enumerate(steps):
        diffs = compare_steps(reference, port)
        if diffs:
            return Divergence(source, k, diffs, reference, port)
    return None
