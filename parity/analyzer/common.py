"""What both analyzer implementations share: constants, the per-step records, input checks.

The array work (head averaging, masking, reductions, logit edits) is written once per
framework on purpose: the two implementations cross-check each other, so they must not
share the code under test. Only framework-free pieces live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

# (layer, head) pairs whose attention tracks the text position; order matters, it is the
# order of `last_aligned_attns`.
LLAMA_ALIGNED_HEADS = [(12, 15), (13, 11), (9, 2)]

# Logit values the analyzer writes (2**15 is representable in every float dtype >= 16 bit).
EOS_SUPPRESSED_LOGIT = -(2**15)
FORCED_EOS_LOGIT = 2**15

# Decision thresholds of chatterbox-tts 0.1.7, named so reports can quote them.
FALSE_START_TAIL_ABOVE = 0.1  # false start while A[-2:, -2:].max() > this ...
FALSE_START_HEAD_BELOW = 0.5  # ... or A[:, :4].max() < this
DISCONTINUITY_WINDOW = (-4, 7)  # a jump j is continuous iff -4 < j < 7
COMPLETE_MARGIN = 3  # complete once text_position >= S - 3
LONG_TAIL_AT_LEAST = 5  # long tail once a final-3 column sums to >= 5 since completion
REPETITION_ABOVE = 5  # repetition once row maxima over A[:, :-5] sum to > 5 since completion
REPETITION_EXCLUDED_TAIL = 5  # the last 5 text tokens are not candidates for repetition
EOS_SUPPRESSION_MIN_TEXT = 5  # EOS suppression only applies when S > 5

SUPPORTED_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class AlignmentAnalysisResult:
    """What one step concluded. Field names and meanings as in chatterbox-tts 0.1.7.

    `repetition` is the alignment repetition (attention back on earlier text after
    completion); token repetition is reported in `DecisionMargins.token_repetition`.
    """

    false_start: bool
    long_tail: bool
    repetition: bool
    discontinuity: bool
    complete: bool
    position: int


@dataclass(frozen=True)
class DecisionMargins:
    """The statistic each decision compared with its threshold, for reports on flips.

    A statistic is None where the reference does not evaluate it (short-circuit), e.g.
    the false-start statistics once started, the end-of-text ones before completion.
    """

    frame_position: int  # argmax of this frame's text row; EOS suppressed while < S - 3 (S > 5)
    position_jump: int  # frame_position - previous text_position; continuous iff -4 < jump < 7
    tail_attention: Optional[float]  # A[-2:, -2:].max(); false start if > 0.1
    head_attention: Optional[float]  # A[:, :4].max(); false start if < 0.5
    long_tail_mass: Optional[float]  # max column sum of A[completed_at:, -3:]; long tail if >= 5
    repetition_mass: Optional[float]  # sum of row maxima of A[completed_at:, :-5]; repetition if > 5
    token_repetition: bool  # the last two tracked tokens are equal (and >= 3 are tracked)
    eos_suppressed: bool
    eos_forced: bool


# Which margin fields explain which decision; used by divergence reports.
DECISION_MARGINS = {
    "false_start": ("tail_attention", "head_attention"),
    "discontinuity": ("position_jump",),
    "position": ("frame_position", "position_jump"),
    "long_tail": ("long_tail_mass",),
    "repetition": ("repetition_mass",),
    "eos_suppressed": ("frame_position",),
    "eos_forced": ("long_tail_mass", "repetition_mass", "token_repetition"),
}

STATE_FIELDS = (
    "curr_frame_pos",
    "text_position",
    "started",
    "started_at",
    "complete",
    "completed_at",
    "generated_tokens",
)


class AnalyzerInputError(ValueError):
    """Input the analyzer refuses, before any state changes. `code` names the fault class
    (see parity.deviations). Both analyzers check in one order, so an input with several
    faults is reported alike: the captures (missing, shape, dtype, non-finite), then the
    logits, then the token."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def check_text_tokens_slice(text_tokens_slice) -> tuple[int, int]:
    if text_tokens_slice is None:
        raise TypeError("text_tokens_slice=(i, j) is required: the text tokens' span in the prompt")
    try:
        i, j = (int(v) for v in text_tokens_slice)
    except (TypeError, ValueError):
        raise AnalyzerInputError(
            "slice", f"text_tokens_slice must be two integers (i, j), got {text_tokens_slice!r}"
        ) from None
    if not 0 <= i < j:
        raise AnalyzerInputError(
            "slice", f"text_tokens_slice must satisfy 0 <= i < j (at least one text token), got ({i}, {j})"
        )
    return i, j


def check_eos_idx(eos_idx) -> int:
    if isinstance(eos_idx, bool) or not hasattr(eos_idx, "__index__"):  # ints and numpy integers
        raise AnalyzerInputError("eos", f"eos_idx must be an integer token id, got {eos_idx!r}")
    eos_idx = int(eos_idx)
    if eos_idx < 0:
        raise AnalyzerInputError("eos", f"eos_idx must be >= 0, got {eos_idx}")
    return eos_idx


def check_logits_shape(shape: Sequence[int], eos_idx: int) -> None:
    if len(shape) == 0 or shape[-1] <= eos_idx:
        raise AnalyzerInputError(
            "eos", f"logits of shape {tuple(shape)} have no column eos_idx={eos_idx}"
        )


def check_attention_shapes(shapes: Sequence[Sequence[int]], text_tokens_slice, first_step: bool) -> None:
    """Shape rules for `last_aligned_attns`: three (Lq, Lk) matrices, equal shapes, and
    enough rows and key columns for the text slice."""
    i, j = text_tokens_slice
    if len(shapes) != len(LLAMA_ALIGNED_HEADS):
        raise AnalyzerInputError(
            "shape", f"last_aligned_attns must hold {len(LLAMA_ALIGNED_HEADS)} matrices, got {len(shapes)}"
        )
    for (layer, head), shape in zip(LLAMA_ALIGNED_HEADS, shapes):
        if len(shape) != 2:
            raise AnalyzerInputError(
                "shape",
                f"attention of layer {layer} head {head} must be 2-D (Lq, Lk) for batch row 0, "
                f"got shape {tuple(shape)}",
            )
    if len({tuple(s) for s in shapes}) != 1:
        raise AnalyzerInputError("shape", f"the three head matrices differ in shape: {[tuple(s) for s in shapes]}")
    lq, lk = shapes[0]
    if lk < j:
        raise AnalyzerInputError(
            "shape", f"attention has {lk} key columns but the text slice ends at {j}"
        )
    if first_step and lq <= j:
        raise AnalyzerInputError(
            "shape",
            f"first step needs query rows after the text (prompt [cond | text | BOS ...]); "
            f"got {lq} rows with the text slice ending at {j}",
        )
    if not first_step and lq < 1:
        raise AnalyzerInputError("shape", "attention has no query rows")


def missing_capture_error(index: int) -> AnalyzerInputError:
    layer, head = LLAMA_ALIGNED_HEADS[index]
    return AnalyzerInputError(
        "missing",
        f"no attention captured for layer {layer} head {head}: set last_aligned_attns, or run the "
        "model with eager attention on the aligned layers so the hooks see weights",
    )


def check_attention_dtypes(dtype_names: Sequence[str]) -> None:
    """One supported float dtype shared by the three head matrices (their mean rounds to it)."""
    for name in dtype_names:
        if name not in SUPPORTED_DTYPES:
            raise AnalyzerInputError(
                "dtype", f"attention dtype {name} is not supported; use one of {', '.join(SUPPORTED_DTYPES)}"
            )
    if len(set(dtype_names)) > 1:
        raise AnalyzerInputError("dtype", f"the three head matrices differ in dtype: {list(dtype_names)}")


def non_finite_error(index: int, step: int) -> AnalyzerInputError:
    layer, head = LLAMA_ALIGNED_HEADS[index]
    return AnalyzerInputError(
        "non-finite", f"attention of layer {layer} head {head} holds NaN or inf at step {step}"
    )


def as_token_id(value) -> int:
    """A Python int from an int-like token (0-d or 1-element arrays take their first item)."""
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return value
    try:
        return int(value)
    except TypeError:
        raise AnalyzerInputError("token", f"next_token must be an integer token id, got {value!r}") from None


def to_float32(x: float) -> float:
    """Round a Python float to the nearest float32 (overflow gives inf, as a cast does)."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


class EndOfTextMass:
    """Running sums behind the long-tail and repetition checks.

    0.1.7 re-sums `A[completed_at:]` in float32 every step, in whatever order torch's
    vectorised kernels choose (it varies with the CPU), so a sum within an ulp of its
    threshold decides differently across machines and frameworks. Here the rows appended
    after completion are accumulated in float64 in row order and rounded once to float32
    when read: the same value in every framework and language (deviation "sum-order").
    """

    def __init__(self, text_len: int):
        self.text_len = text_len
        self.tail = [0.0] * min(3, text_len)  # per final-3 column, as A[completed_at:, -3:]
        self.repetition = 0.0  # sum over rows of max(A[row, :-5])

    def add_rows(self, rows: Sequence[Sequence[float]]) -> None:
        """Rows of the text alignment (float32 values) appended after completion, in order."""
        for row in rows:
            for column, value in enumerate(row[len(row) - len(self.tail) :]):
                self.tail[column] += value
            if self.text_len > REPETITION_EXCLUDED_TAIL:
                self.repetition += max(row[:-REPETITION_EXCLUDED_TAIL])

    def long_tail_mass(self) -> float:
        return max(to_float32(total) for total in self.tail)

    def repetition_mass(self) -> float:
        return to_float32(self.repetition)
