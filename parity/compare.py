"""One comparison for every suite: what two analyzers did at one step, field by field, and
a report of the first step where they part.

Integers, booleans, tokens and logits must be equal exactly (logits bit for bit, NaN equal
to NaN). The accumulated alignment may differ by ALIGNMENT_ULPS float32 ulps, room for GPU
backends whose division is not correctly rounded; on CPU both implementations agree
exactly. Summed margins (long-tail and repetition mass) are float32 sums whose order is
implementation-defined (torch's vectorised cascade sum depends on the CPU's SIMD width),
so they agree to MARGIN_RTOL; the decisions drawn from them must still be equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .analyzer.common import DECISION_MARGINS, STATE_FIELDS

ALIGNMENT_ULPS = 4
MARGIN_RTOL = 1e-5

RESULT_FIELDS = ("false_start", "long_tail", "repetition", "discontinuity", "complete", "position")
MARGIN_DECISIONS = ("token_repetition", "eos_suppressed", "eos_forced")

THRESHOLDS = {
    "tail_attention": "false start if > 0.1",
    "head_attention": "false start if < 0.5",
    "position_jump": "discontinuity unless -4 < jump < 7",
    "frame_position": "EOS suppressed while < S - 3 (S > 5)",
    "long_tail_mass": "long tail if >= 5",
    "repetition_mass": "repetition if > 5",
    "token_repetition": "forces EOS if true",
}


@dataclass
class StepOutcome:
    """What an analyzer produced at one step, as plain data."""

    state: dict
    logits: Optional[np.ndarray] = None  # float32 view of the returned logits
    logits_dtype: Optional[str] = None
    alignment: Optional[np.ndarray] = None  # (T, S) float32
    result: Optional[dict] = None  # None where the analyzer keeps no records (e.g. 0.1.7)
    margins: Optional[dict] = None
    error: Optional[str] = None  # "ExceptionType[code]" when the step raised
    error_message: Optional[str] = None


@dataclass
class FieldDiff:
    field: str
    reference: Any
    port: Any
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.field}: reference {_short(self.reference)}, port {_short(self.port)}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class Divergence:
    source: str
    step: int
    diffs: list[FieldDiff]
    reference: StepOutcome = field(repr=False)
    port: StepOutcome = field(repr=False)

    @property
    def field(self) -> str:
        return self.diffs[0].field

    def __str__(self) -> str:
        lines = [f"port diverged from the reference in {self.source} at step {self.step}: first field {self.field}"]
        for diff in self.diffs:
            lines.append(f"  {diff}")
            lines.extend(f"      {m}" for m in _margin_lines(diff.field, self.reference, self.port))
        if self.reference.error_message or self.port.error_message:
            lines.append(f"  reference error: {self.reference.error_message}")
            lines.append(f"  port error: {self.port.error_message}")
        return "\n".join(lines)


def _short(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    return repr(value)


def _margin_lines(field_name: str, reference: StepOutcome, port: StepOutcome) -> list[str]:
    decision = field_name.split(".", 1)[-1]
    lines = []
    for name in DECISION_MARGINS.get(decision, ()):
        ref = (reference.margins or {}).get(name)
        got = (port.margins or {}).get(name) if port.margins is not None else "n/a"
        lines.append(f"margin {name}: reference {ref!r}, port {got!r} ({THRESHOLDS.get(name, '')})")
    return lines


def describe_array_diff(reference: np.ndarray, port: np.ndarray, ulps: int = 0) -> Optional[str]:
    """None when equal (NaN equals NaN; within `ulps` float32 ulps), else where and by how much."""
    if reference.shape != port.shape:
        return f"shape {reference.shape} vs {port.shape}"
    ref = reference.astype(np.float32, copy=False)
    got = port.astype(np.float32, copy=False)
    same = (ref == got) | (np.isnan(ref) & np.isnan(got))
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: such pairs are judged by `same`
        delta = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        if ulps:
            spacing = np.spacing(np.maximum(np.abs(ref), np.abs(got)))
            same |= np.isfinite(delta) & (delta <= ulps * spacing)
    if same.all():
        return None
    bad = np.argwhere(~same)
    first = tuple(int(v) for v in bad[0])
    delta[same] = 0
    delta[np.isnan(delta)] = np.inf
    worst = tuple(int(v) for v in np.unravel_index(np.argmax(delta), delta.shape))
    return (
        f"{len(bad)} of {ref.size} values differ; first at {list(first)}: reference {ref[first]!r}, "
        f"port {got[first]!r}; max |d| {delta[worst]:.3g} at {list(worst)}"
    )


def _floats_close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= MARGIN_RTOL * max(abs(a), abs(b))


def compare_steps(reference: StepOutcome, port: StepOutcome) -> list[FieldDiff]:
    """Every field on which `port` differs from `reference`, most decisive first."""
    if reference.error or port.error:
        if reference.error != port.error:
            return [FieldDiff("error", reference.error, port.error)]
        return []
    diffs = []
    if reference.result is not None and port.result is not None:
        diffs += [
            FieldDiff(f"result.{name}", reference.result[name], port.result[name])
            for name in RESULT_FIELDS
            if reference.result[name] != port.result[name]
        ]
    if reference.margins is not None and port.margins is not None:
        diffs += [
            FieldDiff(f"decision.{name}", reference.margins[name], port.margins[name])
            for name in MARGIN_DECISIONS
            if reference.margins[name] != port.margins[name]
        ]
    diffs += [
        FieldDiff(f"state.{name}", reference.state[name], port.state[name])
        for name in STATE_FIELDS
        if reference.state[name] != port.state[name]
    ]
    if reference.alignment is not None:
        detail = describe_array_diff(reference.alignment, port.alignment, ALIGNMENT_ULPS)
        if detail:
            diffs.append(FieldDiff("state.alignment", reference.alignment, port.alignment, detail))
    if reference.logits_dtype != port.logits_dtype:
        diffs.append(FieldDiff("logits.dtype", reference.logits_dtype, port.logits_dtype))
    if reference.logits is not None:
        detail = describe_array_diff(reference.logits, port.logits)
        if detail:
            diffs.append(FieldDiff("logits", reference.logits, port.logits, detail))
    if reference.margins is not None and port.margins is not None:
        for name, ref in reference.margins.items():
            got = port.margins.get(name)
            equal = _floats_close(ref, got) if isinstance(ref, float) or isinstance(got, float) else ref == got
            if not equal:
                diffs.append(FieldDiff(f"margins.{name}", ref, got, THRESHOLDS.get(name, "")))
    return diffs
