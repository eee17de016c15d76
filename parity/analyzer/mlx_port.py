"""The MLX port of the alignment stream analyzer, step for step equal to `torch_ref`.

Same surface as the reference: construct with `text_tokens_slice=(i, j)` and `eos_idx`,
assign the three (Lq, Lk) head matrices of batch row 0 (mx or numpy arrays) to
`last_aligned_attns` in `LLAMA_ALIGNED_HEADS` order, then call `step(logits, next_token)`,
which returns an `mx.array` and leaves the input array untouched.

Written with plain mx ops so it runs on any MLX device and reads as a guide for a Swift
port; every float reduction is spelled out where torch's rounding must be reproduced.
"""

from __future__ import annotations

import logging

import mlx.core as mx
import numpy as np

from .common import (
    COMPLETE_MARGIN,
    DISCONTINUITY_WINDOW,
    EOS_SUPPRESSED_LOGIT,
    EOS_SUPPRESSION_MIN_TEXT,
    FALSE_START_HEAD_BELOW,
    FALSE_START_TAIL_ABOVE,
    FORCED_EOS_LOGIT,
    LLAMA_ALIGNED_HEADS,
    LONG_TAIL_AT_LEAST,
    REPETITION_ABOVE,
    REPETITION_EXCLUDED_TAIL,
    AlignmentAnalysisResult,
    AnalyzerInputError,
    DecisionMargins,
    EndOfTextMass,
    as_token_id,
    check_attention_shapes,
    check_eos_idx,
    check_logits_shape,
    check_text_tokens_slice,
    check_attention_dtypes,
    missing_capture_error,
    non_finite_error,
)

logger = logging.getLogger(__name__)

def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _as_mx(x):
    if isinstance(x, mx.array):
        return x
    array = np.asarray(x)
    check_attention_dtypes([str(array.dtype)])  # numpy has no bfloat16; float64 is refused here
    return mx.array(array)


class AlignmentStreamAnalyzer:
    array_api = "mlx"

    def __init__(self, tfmr=None, queue=None, text_tokens_slice=None, alignment_layer_idx=9, eos_idx=0):
        if tfmr is not None:
            raise TypeError(
                "the MLX analyzer does not hook a model: assign the captured head matrices to "
                "last_aligned_attns before each step"
            )
        self.text_tokens_slice = (i, j) = check_text_tokens_slice(text_tokens_slice)
        self.eos_idx = check_eos_idx(eos_idx)
        self.alignment = mx.zeros((0, j - i), dtype=mx.float32)
        self.curr_frame_pos = 0
        self.text_position = 0
        self.started = False
        self.started_at = None
        self.complete = False
        self.completed_at = None
        self.generated_tokens = []
        self._end_of_text = EndOfTextMass(j - i)
        self.results: list[AlignmentAnalysisResult] = []
        self.margins: list[DecisionMargins] = []
        self.last_aligned_attns = [None] * len(LLAMA_ALIGNED_HEADS)

    def cleanup(self):
        """Nothing to undo (no hooks); present so both analyzers can be used alike."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.cleanup()
        return False

    def step(self, logits, next_token=None):
        """Analyze the attention of the frame just decoded; return the (possibly edited) logits."""
        attns = self._checked_attns()
        # Built lazily, then evaluated with the finiteness check in one go (one device sync).
        chunk = self._mask_future_text(self._text_chunk(self._mean_heads(attns)))
        alignment = mx.concatenate([self.alignment, chunk], axis=0)
        finite = mx.all(mx.stack([mx.all(mx.isfinite(a)) for a in attns]))
        frame_argmax = self._argmax(chunk[-1])
        mx.eval(finite, frame_argmax, alignment)
        if not finite.item():
            bad = next(k for k, a in enumerate(attns) if not mx.all(mx.isfinite(a)).item())
            raise non_finite_error(bad, self.curr_frame_pos)
        logits = logits if isinstance(logits, mx.array) else mx.array(np.asarray(logits))
        check_logits_shape(tuple(logits.shape), self.eos_idx)
        token_id = self._token_id(next_token)

        self.alignment = A = alignment
        T, S = A.shape
        frame_position = int(frame_argmax.item())
        position_jump = frame_position - self.text_position
        low, high = DISCONTINUITY_WINDOW
        discontinuity = not (low < position_jump < high)
        if not discontinuity:
            self.text_position = frame_position

        false_start, tail_attention, head_attention = self._false_start(A)
        self.started = not false_start
        self._mark_started(T)

        if self.complete:  # rows after completed_at: every row of a step after the completing one
            self._end_of_text.add_rows(chunk.tolist())
        self.complete = self.complete or self.text_position >= S - COMPLETE_MARGIN
        if self.complete and self.completed_at is None:
            self.completed_at = T

        long_tail, long_tail_mass = self._long_tail()
        repetition, repetition_mass = self._alignment_repetition(S)
        token_repetition = self._track_token(token_id)

        eos_suppressed = frame_position < S - COMPLETE_MARGIN and S > EOS_SUPPRESSION_MIN_TEXT
        eos_forced = long_tail or repetition or token_repetition
        if eos_forced:
            logger.warning(
                "analyzer forces EOS at frame %d: long_tail=%s repetition=%s token_repetition=%s",
                self.curr_frame_pos, long_tail, repetition, token_repetition,
            )
        logits = self._edit_logits(logits, eos_suppressed, eos_forced)

        self.results.append(
            AlignmentAnalysisResult(
                false_start=false_start,
                long_tail=long_tail,
                repetition=repetition,
                discontinuity=discontinuity,
                complete=self.complete,
                position=self.text_position,
            )
        )
        self.margins.append(
            DecisionMargins(
                frame_position=frame_position,
                position_jump=position_jump,
                tail_attention=tail_attention,
                head_attention=head_attention,
                long_tail_mass=long_tail_mass,
                repetition_mass=repetition_mass,
                token_repetition=token_repetition,
                eos_suppressed=eos_suppressed,
                eos_forced=eos_forced,
            )
        )
        self.curr_frame_pos += 1
        return logits

    # ---- pieces of a step ----------------------------------------------------------------

    def _checked_attns(self):
        attns = list(self.last_aligned_attns)
        for index, attn in enumerate(attns):
            if attn is None:
                raise missing_capture_error(index)
        attns = [_as_mx(a) for a in attns]
        check_attention_shapes([tuple(a.shape) for a in attns], self.text_tokens_slice, self.curr_frame_pos == 0)
        check_attention_dtypes([_dtype_name(a.dtype) for a in attns])
        return attns

    def _token_id(self, next_token):
        if next_token is None:
            return None
        if isinstance(next_token, (mx.array, np.ndarray)):
            if next_token.size == 0:
                raise AnalyzerInputError("token", "next_token is an empty array")
            return as_token_id(next_token.reshape(-1)[0].item())
        return as_token_id(next_token)

    def _mean_heads(self, attns):
        # torch's CPU mean of the stacked heads: float32 sum in head order, true division by
        # the head count, one rounding to the attention dtype. Then float32 for accumulation.
        dtype = attns[0].dtype
        total = attns[0].astype(mx.float32)
        for attn in attns[1:]:
            total = total + attn.astype(mx.float32)
        return (total / len(attns)).astype(dtype).astype(mx.float32)

    def _text_chunk(self, aligned_attn):
        i, j = self.text_tokens_slice
        if self.curr_frame_pos == 0:
            return aligned_attn[j:, i:j]  # rows after the text: the BOS row(s) of the prompt
        return aligned_attn[:, i:j]  # KV-cached passes: the new frame(s) only

    def _mask_future_text(self, chunk):
        # Text tokens beyond the frame count are zeroed (0.1.7's "monotonic" mask).
        columns = mx.arange(chunk.shape[1])
        return mx.where(columns <= self.curr_frame_pos, chunk, mx.zeros_like(chunk))

    def _argmax(self, row):
        return mx.argmax(row)  # first index on ties, like torch

    def _mark_started(self, T):
        if self.started and self.started_at is None:
            self.started_at = T

    def _false_start(self, A):
        if self.started:
            return False, None, None
        tail = mx.max(A[-2:, -2:])
        head = mx.max(A[:, :4])
        # float32 comparisons (the scalar thresholds take the array's dtype), as in torch.
        tail_high, head_low = tail > FALSE_START_TAIL_ABOVE, head < FALSE_START_HEAD_BELOW
        mx.eval(tail, head, tail_high, head_low)
        return bool(tail_high.item() or head_low.item()), tail.item(), head.item()

    def _long_tail(self):
        if not self.complete:
            return False, None
        mass = self._end_of_text.long_tail_mass()
        return mass >= LONG_TAIL_AT_LEAST, mass

    def _alignment_repetition(self, S):
        if not self.complete or S <= REPETITION_EXCLUDED_TAIL:
            # Too short a text: see deviation "short-text-repetition" (0.1.7 raises here).
            return False, None
        mass = self._end_of_text.repetition_mass()
        return mass > REPETITION_ABOVE, mass

    def _track_token(self, token_id):
        if token_id is not None:
            self.generated_tokens.append(token_id)
            if len(self.generated_tokens) > 8:
                self.generated_tokens = self.generated_tokens[-8:]
        return len(self.generated_tokens) >= 3 and len(set(self.generated_tokens[-2:])) == 1

    def _edit_logits(self, logits, eos_suppressed, eos_forced):
        is_eos = mx.arange(logits.shape[-1]) == self.eos_idx
        if eos_forced:
            forced = mx.where(is_eos, FORCED_EOS_LOGIT, EOS_SUPPRESSED_LOGIT).astype(logits.dtype)
            return mx.broadcast_to(forced, logits.shape)
        if eos_suppressed:
            return mx.where(is_eos, mx.array(EOS_SUPPRESSED_LOGIT, dtype=logits.dtype), logits)
        return logits
