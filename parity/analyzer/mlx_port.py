"""The MLX port of the alignment stream analyzer, step for step equal to `torch_ref`.

Same surface as the reference: construct with `text_tokens_slice=(i, j)` and `eos_idx`,
assign the three (Lq, Lk) head matrices of batch row 0 (mx or numpy arrays) to
`last_aligned_attns` in `LLAMA_ALIGNED_HEADS` order, then call `step(logits, next_token)`,
which returns an `mx.array` and leaves the input array untouched.

The array operations are written with plain mx ops so they run on any MLX device and read
as a guide for a Swift port; every float reduction is spelled out where torch's rounding
must be reproduced. The decisions are in `base.py`.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from .base import AnalyzerBase
from .common import (
    EOS_SUPPRESSED_LOGIT,
    FORCED_EOS_LOGIT,
    AnalyzerInputError,
    as_token_id,
    check_attention_dtypes,
    check_attention_shapes,
    check_logits_shape,
    missing_capture_error,
    non_finite_error,
)


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _as_mx(x):
    if isinstance(x, mx.array):
        return x
    array = np.asarray(x)
    check_attention_dtypes([str(array.dtype)])  # numpy has no bfloat16; float64 is refused here
    return mx.array(array)


class AlignmentStreamAnalyzer(AnalyzerBase):
    array_api = "mlx"

    def __init__(self, tfmr=None, queue=None, text_tokens_slice=None, alignment_layer_idx=9, eos_idx=0):
        if tfmr is not None:
            raise TypeError(
                "the MLX analyzer does not hook a model: assign the captured head matrices to "
                "last_aligned_attns before each step"
            )
        super().__init__(text_tokens_slice, eos_idx)

    # ---- framework operations (see base.py) ----------------------------------------------------

    def _empty_alignment(self, text_len):
        return mx.zeros((0, text_len), dtype=mx.float32)

    def _captured(self):
        attns = list(self.last_aligned_attns)
        for index, attn in enumerate(attns):
            if attn is None:
                raise missing_capture_error(index)
        attns = [_as_mx(a) for a in attns]
        check_attention_shapes([tuple(a.shape) for a in attns], self.text_tokens_slice, self.curr_frame_pos == 0)
        check_attention_dtypes([_dtype_name(a.dtype) for a in attns])
        return attns

    def _frame(self, attns):
        # Built lazily and evaluated together with the finiteness check: one device sync.
        chunk = self._mask_future_text(self._text_chunk(self._mean_heads(attns)))
        alignment = mx.concatenate([self.alignment, chunk], axis=0)
        finite = mx.all(mx.isfinite(mx.stack(attns)), axis=(1, 2))
        frame_argmax = self._argmax(chunk[-1])
        mx.eval(finite, frame_argmax, alignment)
        for index, ok in enumerate(finite.tolist()):
            if not ok:
                raise non_finite_error(index, self.curr_frame_pos)
        return alignment, chunk, int(frame_argmax.item())

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

    def _false_start_stats(self, A):
        tail, head = mx.max(A[-2:, -2:]), mx.max(A[:, :4])
        mx.eval(tail, head)
        return tail.item(), head.item()

    def _checked_logits(self, logits):
        logits = logits if isinstance(logits, mx.array) else mx.array(np.asarray(logits))
        check_logits_shape(tuple(logits.shape), self.eos_idx)
        return logits

    def _token_id(self, next_token):
        if next_token is None:
            return None
        if isinstance(next_token, (mx.array, np.ndarray)):
            if next_token.size == 0:
                raise AnalyzerInputError("token", "next_token is an empty array")
            return as_token_id(next_token.reshape(-1)[0].item())
        return as_token_id(next_token)

    def _edit_logits(self, logits, eos_suppressed, eos_forced):
        is_eos = mx.arange(logits.shape[-1]) == self.eos_idx
        if eos_forced:
            forced = mx.where(is_eos, FORCED_EOS_LOGIT, EOS_SUPPRESSED_LOGIT).astype(logits.dtype)
            return mx.broadcast_to(forced, logits.shape)
        if eos_suppressed:
            return mx.where(is_eos, mx.array(EOS_SUPPRESSED_LOGIT, dtype=logits.dtype), logits)
        return logits
