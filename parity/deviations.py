"""The deviation ledger: every deliberate difference between our analyzers and
chatterbox-tts 0.1.7, with the reason and the tests that pin both sides.

This is the one place they are written down. `python -m parity deviations` prints it; the
oracle suite uses `explains()` to accept exactly these differences and no others; and
parity/tests/test_deviations.py holds a reference-side and an our-side test per entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Deviation:
    id: str
    title: str
    reference: str  # what chatterbox-tts 0.1.7 does
    ours: str  # what we do instead
    reason: str
    tests: tuple[str, ...]  # test functions in parity/tests/test_deviations.py, both sides


LEDGER = (
    Deviation(
        id="short-text-repetition",
        title="No crash on completion with a text of 5 or fewer tokens",
        reference="Once `complete`, evaluates `A[completed_at:, :-5].max(dim=1)`; with S <= 5 that slice has "
        "no columns and torch raises IndexError inside `step`, on the very step that completes.",
        ours="With S <= 5 the alignment-repetition check is skipped: `repetition` is False and its margin "
        "(`repetition_mass`) is None. Every other check, the logits and the state are as 0.1.7 would "
        "compute them.",
        reason="With no text before the final five tokens there is nothing the check could find repeated; "
        "a crash ends a short utterance ('Hi.', 'OK') mid-generation.",
        tests=("test_short_text_reference_raises_index_error", "test_short_text_ours_skips_repetition"),
    ),
    Deviation(
        id="hook-cleanup",
        title="Hooks are removed and the transformer config restored",
        reference="Registers a forward hook per aligned head on every construction and never removes them; "
        "switches the shared config to eager attention with output_attentions=True and never restores it "
        "(its saved 'originals' are overwritten by the second and third head's registration).",
        ours="Keeps the hook handles; `cleanup()` removes every hook it added and restores "
        "`output_attentions` and `_attn_implementation`; idempotent; the analyzer is a context manager.",
        reason="Hooks piling up across sequential inferences leak memory and capture stale attention "
        "(seed document 000); a model left in eager mode is slower for everything after.",
        tests=("test_hooks_reference_leaks", "test_hooks_ours_cleaned_up"),
    ),
    Deviation(
        id="eager-three-layers",
        title="Only the aligned layers run eager attention",
        reference="Attaching the analyzer switches the shared transformer config to eager attention with "
        "output_attentions=True, so all 30 layers compute and return their attention weights every step.",
        ours="`AlignmentStreamAnalyzer(..., eager_attention=False)` leaves the config alone, and "
        "`parity.model.t3_torch.eager_aligned_layers` runs layers 9, 12 and 13 eager while every other "
        "layer keeps SDPA; the T3 loop uses both. The default, eager_attention=True, keeps 0.1.7's switch "
        "(undone by cleanup) for callers that hand over a model as 0.1.7 does.",
        reason="Only three heads are read; eager attention in the other 27 layers costs time and O(T^2) "
        "memory per layer for nothing. MLX mirrors this: only those three layers lose the fused kernel.",
        tests=("test_eager_reference_switches_whole_model", "test_eager_ours_only_aligned_layers"),
    ),
    Deviation(
        id="sum-order",
        title="End-of-text sums have one defined order: float64, row by row",
        reference="Re-sums everything since completion every step with torch reductions: the long-tail column "
        "sums of `A[completed_at:, -3:]` (a strided reduction torch's CPU kernel accumulates in double) and "
        "the sum of row maxima of `A[completed_at:, :-5]` (a contiguous float32 sum in torch's vectorised "
        "cascade order, which depends on the CPU's SIMD width). A sum within an ulp of its threshold can "
        "decide differently from any other order: 24 row maxima that torch sums to 5.0 (no repetition) "
        "sum to 5.0000005 (> 5, repetition) in float64 rounded to float32.",
        ours="Accumulates the rows appended after completion in float64, in row order, and rounds once to "
        "float32 when comparing (`EndOfTextMass`), for both sums. Identical in any framework or language; "
        "differs from 0.1.7 only when the repetition sum lands within a few float32 ulps of 5. Also O(S) "
        "per step where 0.1.7 is O(T * S).",
        reason="A port cannot match an order that varies with the reference's hardware; hypothesis found "
        "such knife-edge sums (MLX's float32 order against torch's) quickly. A defined order makes "
        "step-for-step parity checkable everywhere.",
        tests=("test_sum_order_reference_uses_float32_kernel_order", "test_sum_order_ours_is_float64_row_order"),
    ),
    Deviation(
        id="input-validation",
        title="Malformed input is refused up front with a clear AnalyzerInputError",
        reference="Fails somewhere inside `step` with whatever torch raises (IndexError, RuntimeError, "
        "TypeError), often after mutating state, or proceeds: an empty text slice, a missing capture, "
        "head matrices of different shapes, too few rows or key columns, logits without the EOS column, "
        "an attention dtype other than float32/float16/bfloat16.",
        ours="Validates before touching any state and raises AnalyzerInputError (a ValueError) whose "
        "`code` names the fault class ('slice', 'missing', 'shape', 'eos', 'dtype', 'token') and whose "
        "message says what was expected.",
        reason="A parity suite must tell a caller's bug from a port's bug; a half-applied step makes the "
        "next divergence report misleading.",
        tests=("test_invalid_input_reference_fails_or_proceeds", "test_invalid_input_ours_refuses_cleanly"),
    ),
    Deviation(
        id="non-finite-attention",
        title="NaN or inf in the head matrices is an error",
        reference="Proceeds: NaN enters the alignment, argmax then picks the NaN's position, comparisons "
        "with NaN are false, so decisions silently change.",
        ours="Raises AnalyzerInputError(code='non-finite') naming the head and the step, before any state "
        "changes. Non-finite logits are not an error: they pass through (or are overwritten) exactly as "
        "in 0.1.7.",
        reason="Softmax output is finite; a NaN means the model is broken upstream, and hiding it behind "
        "changed decisions would make parity meaningless.",
        tests=("test_non_finite_reference_proceeds", "test_non_finite_ours_raises"),
    ),
    Deviation(
        id="records",
        title="Each step records its result and decision margins",
        reference="Computes false_start, long_tail, repetition, discontinuity but discards them; "
        "AlignmentAnalysisResult is defined and never built; `text_position` becomes a 0-d tensor.",
        ours="Appends an AlignmentAnalysisResult and a DecisionMargins to `results` / `margins` every "
        "step; `text_position` and the other state scalars are Python ints. Nothing else changes.",
        reason="Step-for-step parity needs the decisions themselves, and a flipped decision is only "
        "diagnosable with the statistic it compared.",
        tests=("test_records_reference_has_none", "test_records_ours_match_decisions"),
    ),
    Deviation(
        id="mlx-logits-not-mutated",
        title="The MLX port does not edit its input logits in place",
        reference="Writes the suppressed EOS logit into the caller's tensor in place (and returns it).",
        ours="torch_ref keeps 0.1.7's in-place edit. The MLX port returns a new mx.array and leaves its "
        "input untouched; returned values are identical.",
        reason="MLX arrays are values in a lazy graph; mutating a caller's array behind its back is not "
        "idiomatic there and would surprise a Swift port.",
        tests=("test_in_place_reference_mutates", "test_in_place_mlx_port_does_not"),
    ),
)

BY_ID = {d.id: d for d in LEDGER}

# AnalyzerInputError codes and the entry that accounts for them.
_CODES = {
    "non-finite": "non-finite-attention",
    "slice": "input-validation",
    "missing": "input-validation",
    "shape": "input-validation",
    "eos": "input-validation",
    "dtype": "input-validation",
    "token": "input-validation",
}


SUM_ORDER_RTOL = 1e-5  # how near its threshold a sum must be for the order to decide it


def _near_threshold(margins: Optional[dict]) -> bool:
    return any(
        margins and margins.get(name) is not None and abs(margins[name] - 5) <= 5 * SUM_ORDER_RTOL
        for name in ("long_tail_mass", "repetition_mass")
    )


def explains(reference_error: Optional[str], our_error: Optional[str], text_len: int, complete: bool,
             our_margins: Optional[dict] = None) -> Optional[str]:
    """The ledger id accounting for a step where 0.1.7 and our reference part ways, or None.

    Errors are labels as `parity.replay.error_label` writes them ('IndexError',
    'AnalyzerInputError[shape]'); `complete` and `our_margins` are ours after the step.
    """
    if our_error and our_error.startswith("AnalyzerInputError["):
        return _CODES.get(our_error[len("AnalyzerInputError[") : -1])
    if reference_error == "IndexError" and our_error is None and complete and text_len <= 5:
        return "short-text-repetition"
    if reference_error is None and our_error is None and _near_threshold(our_margins):
        return "sum-order"
    return None


def as_markdown() -> str:
    lines = ["# Deviations from chatterbox-tts 0.1.7", ""]
    for d in LEDGER:
        lines += [
            f"## {d.id}: {d.title}",
            f"- 0.1.7: {d.reference}",
            f"- ours: {d.ours}",
            f"- why: {d.reason}",
            f"- tests: {', '.join(d.tests)}",
            "",
        ]
    return "\n".join(lines)
