"""The PyTorch reference analyzer: chatterbox-tts 0.1.7 behaviour, plus hook cleanup,
model-free driving, per-step records, and the fixes listed in `parity.deviations`.

Usage with a transformers Llama model (hooks capture the aligned heads)::

    with AlignmentStreamAnalyzer(model.tfmr, None, text_tokens_slice=(i, j), eos_idx=eos) as analyzer:
        logits = analyzer.step(logits, next_token=last_token)

and without one (`tfmr=None`): assign the three (Lq, Lk) matrices of batch row 0 to
`last_aligned_attns`, in `LLAMA_ALIGNED_HEADS` order, before each `step`.

Like 0.1.7, `step` edits the logits tensor it is given in place when it suppresses EOS.
The array operations are 0.1.7's own torch expressions; the decisions are in `base.py`.
"""

from __future__ import annotations

import torch

from .base import AnalyzerBase
from .common import (
    EOS_SUPPRESSED_LOGIT,
    FORCED_EOS_LOGIT,
    LLAMA_ALIGNED_HEADS,
    AnalyzerInputError,
    as_token_id,
    check_attention_dtypes,
    check_attention_shapes,
    check_logits_shape,
    missing_capture_error,
    non_finite_error,
)


class AlignmentStreamAnalyzer(AnalyzerBase):
    array_api = "torch"

    def __init__(self, tfmr=None, queue=None, text_tokens_slice=None, alignment_layer_idx=9, eos_idx=0,
                 eager_attention=True):
        """`eager_attention=True` switches the whole model to eager attention, as 0.1.7 does;
        pass False when the aligned layers already run eager (see
        parity.model.t3_torch.eager_aligned_layers) and the config must stay as it is.
        `queue` and `alignment_layer_idx` are accepted for signature compatibility; 0.1.7
        ignores them too."""
        super().__init__(text_tokens_slice, eos_idx)
        self._hook_handles = []
        self._saved_config = None  # (config, output_attentions, _attn_implementation) before we changed it
        if tfmr is not None:
            self._attach(tfmr, eager_attention)

    # ---- model wiring -------------------------------------------------------------------

    def _attach(self, tfmr, eager_attention):
        try:
            for buffer_idx, (layer_idx, head_idx) in enumerate(LLAMA_ALIGNED_HEADS):
                hook = self._capture_hook(buffer_idx, head_idx)
                self._hook_handles.append(tfmr.layers[layer_idx].self_attn.register_forward_hook(hook))
            if eager_attention:
                self._use_eager_attention(tfmr)
        except BaseException:
            self.cleanup()
            raise

    def _capture_hook(self, buffer_idx, head_idx):
        def capture(module, args, output):
            # LlamaAttention returns (attn_output, attn_weights); weights are None under SDPA.
            if isinstance(output, tuple) and len(output) > 1 and output[1] is not None:
                self.last_aligned_attns[buffer_idx] = output[1].cpu()[0, head_idx]

        return capture

    def _use_eager_attention(self, tfmr):
        # As 0.1.7: attention weights need the eager kernel and output_attentions. Unlike
        # 0.1.7, the original values are saved once, before any change, so cleanup restores them.
        config = getattr(tfmr, "config", None)
        if config is None or not hasattr(config, "output_attentions"):
            return
        self._saved_config = (config, config.output_attentions, getattr(config, "_attn_implementation", None))
        if getattr(config, "_attn_implementation", None) == "sdpa":
            config._attn_implementation = "eager"
        config.output_attentions = True

    def cleanup(self):
        """Remove every hook this analyzer added and restore the config it changed. Idempotent."""
        while self._hook_handles:
            self._hook_handles.pop().remove()
        if self._saved_config is not None:
            config, output_attentions, attn_implementation = self._saved_config
            self._saved_config = None
            config.output_attentions = output_attentions
            if attn_implementation is not None:
                config._attn_implementation = attn_implementation

    # ---- framework operations (see base.py) ----------------------------------------------------

    def _empty_alignment(self, text_len):
        return torch.zeros(0, text_len)

    def _captured(self):
        attns = list(self.last_aligned_attns)
        for index, attn in enumerate(attns):
            if attn is None:
                raise missing_capture_error(index)
        check_attention_shapes([tuple(a.shape) for a in attns], self.text_tokens_slice, self.curr_frame_pos == 0)
        check_attention_dtypes([str(a.dtype).replace("torch.", "") for a in attns])
        return attns

    def _frame(self, attns):
        for index, attn in enumerate(attns):
            if not torch.isfinite(attn).all():
                raise non_finite_error(index, self.curr_frame_pos)
        chunk = self._mask_future_text(self._text_chunk(self._mean_heads(attns)))
        return torch.cat((self.alignment, chunk), dim=0), chunk, self._argmax(chunk[-1])

    def _mean_heads(self, attns):
        # torch's mean over the stacked heads, in the attention dtype (bf16 models round here).
        return torch.stack(attns).mean(dim=0)

    def _text_chunk(self, aligned_attn):
        i, j = self.text_tokens_slice
        if self.curr_frame_pos == 0:
            # First pass: prompt rows [cond | text | BOS ...]; keep the rows after the text.
            return aligned_attn[j:, i:j].clone().cpu()
        # KV-cached passes: the new frame(s) only.
        return aligned_attn[:, i:j].clone().cpu()

    def _mask_future_text(self, chunk):
        # 0.1.7's "monotonic" mask: text tokens beyond the frame count cannot be attended yet.
        chunk[:, self.curr_frame_pos + 1 :] = 0
        return chunk

    def _argmax(self, row):
        return int(row.argmax())  # first index on ties, as torch documents

    def _false_start_stats(self, A):
        return float(A[-2:, -2:].max()), float(A[:, :4].max())

    def _checked_logits(self, logits):
        check_logits_shape(tuple(logits.shape), self.eos_idx)
        return logits

    def _token_id(self, next_token):
        if next_token is None:
            return None
        if isinstance(next_token, torch.Tensor):
            if next_token.numel() == 0:
                raise AnalyzerInputError("token", "next_token is an empty tensor")
            return as_token_id(next_token.reshape(-1)[0].item())
        return as_token_id(next_token)

    def _edit_logits(self, logits, eos_suppressed, eos_forced):
        if eos_suppressed:
            logits[..., self.eos_idx] = EOS_SUPPRESSED_LOGIT  # in place, as 0.1.7
        if eos_forced:
            logits = torch.full_like(logits, EOS_SUPPRESSED_LOGIT)
            logits[..., self.eos_idx] = FORCED_EOS_LOGIT
        return logits
