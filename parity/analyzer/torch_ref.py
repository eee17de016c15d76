"""The PyTorch reference analyzer: chatterbox-tts 0.1.7 behaviour, plus hook cleanup,
model-free driving, per-step records, and the fixes listed in `parity.deviations`.

Usage with a transformers Llama model (hooks capture the aligned heads)::

    with AlignmentStreamAnalyzer(model.tfmr, None, text_tokens_slice=(i, j), eos_idx=eos) as analyzer:
        logits = analyzer.step(logits, next_token=last_token)

and without one (`tfmr=None`): assign the three (Lq, Lk) matrices of batch row 0 to
`last_aligned_attns`, in `LLAMA_ALIGNED_HEADS` order, before each `step`.

Like 0.1.7, `step` edits the logits tensor it is given in place when it suppresses EOS.
"""

from __future__ import annotations

import logging

import torch

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

class AlignmentStreamAnalyzer:
    array_api = "torch"

    def __init__(self, tfmr=None, queue=None, text_tokens_slice=None, alignment_layer_idx=9, eos_idx=0):
        # `queue` and `alignment_layer_idx` are accepted for signature compatibility; 0.1.7 ignores them too.
        self.text_tokens_slice = (i, j) = check_text_tokens_slice(text_tokens_slice)
        self.eos_idx = check_eos_idx(eos_idx)
        self.alignment = torch.zeros(0, j - i)
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
        self._hook_handles = []
        self._saved_config = None  # (config, output_attentions, _attn_implementation) before we changed it
        if tfmr is not None:
            self._attach(tfmr)

    # ---- model wiring -------------------------------------------------------------------

    def _attach(self, tfmr):
        try:
            for buffer_idx, (layer_idx, head_idx) in enumerate(LLAMA_ALIGNED_HEADS):
                hook = self._capture_hook(buffer_idx, head_idx)
                self._hook_handles.append(tfmr.layers[layer_idx].self_attn.register_forward_hook(hook))
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

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.cleanup()
        return False

    # ---- one decoding step ---------------------------------------------------------------

    def step(self, logits, next_token=None):
        """Analyze the attention of the frame just decoded; return the (possibly edited) logits."""
        attns = self._checked_attns()
        check_logits_shape(tuple(logits.shape), self.eos_idx)
        token_id = self._token_id(next_token)

        chunk = self._mask_future_text(self._text_chunk(self._mean_heads(attns)))
        self.alignment = torch.cat((self.alignment, chunk), dim=0)
        A = self.alignment
        T, S = A.shape

        frame_position = self._argmax(chunk[-1])
        position_jump = frame_position - self.text_position
        low, high = DISCONTINUITY_WINDOW
        discontinuity = not (low < position_jump < high)
        if not discontinuity:
            self.text_position = frame_position

        false_start, tail_attention, head_attention = self._false_start(A)
        self.started = not false_start
        if self.started and self.started_at is None:
            self.started_at = T

        if self.complete:  # rows after completed_at: every row of a step after the completing one
            self._end_of_text.add_rows(chunk.tolist())
        self.complete = self.complete or self.text_position >= S - COMPLETE_MARGIN
        if self.complete and self.completed_at is None:
            self.completed_at = T

        long_tail, long_tail_mass = self._long_tail()
        repetition, repetition_mass = self._alignment_repetition(S)
        token_repetition = self._track_token(token_id)

        eos_suppressed = frame_position < S - COMPLETE_MARGIN and S > EOS_SUPPRESSION_MIN_TEXT
        if eos_suppressed:
            logits[..., self.eos_idx] = EOS_SUPPRESSED_LOGIT
        eos_forced = long_tail or repetition or token_repetition
        if eos_forced:
            logger.warning(
                "analyzer forces EOS at frame %d: long_tail=%s repetition=%s token_repetition=%s",
                self.curr_frame_pos, long_tail, repetition, token_repetition,
            )
            logits = torch.full_like(logits, EOS_SUPPRESSED_LOGIT)
            logits[..., self.eos_idx] = FORCED_EOS_LOGIT

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
        check_attention_shapes([tuple(a.shape) for a in attns], self.text_tokens_slice, self.curr_frame_pos == 0)
        check_attention_dtypes([str(a.dtype).replace("torch.", "") for a in attns])
        for index, attn in enumerate(attns):
            if not torch.isfinite(attn).all():
                raise non_finite_error(index, self.curr_frame_pos)
        return attns

    def _token_id(self, next_token):
        if next_token is None:
            return None
        if isinstance(next_token, torch.Tensor):
            if next_token.numel() == 0:
                raise AnalyzerInputError("token", "next_token is an empty tensor")
            return as_token_id(next_token.reshape(-1)[0].item())
        return as_token_id(next_token)

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

    def _false_start(self, A):
        if self.started:
            return False, None, None
        tail = A[-2:, -2:].max()
        head = A[:, :4].max()
        # Compare as tensors: the thresholds are then rounded to float32, as in 0.1.7.
        false_start = bool(tail > FALSE_START_TAIL_ABOVE) or bool(head < FALSE_START_HEAD_BELOW)
        return false_start, float(tail), float(head)

    def _long_tail(self):
        if not self.complete:
            return False, None
        mass = self._end_of_text.long_tail_mass()
        return mass >= LONG_TAIL_AT_LEAST, mass

    def _alignment_repetition(self, S):
        if not self.complete:
            return False, None
        if S <= REPETITION_EXCLUDED_TAIL:
            # Deviation "short-text-repetition": 0.1.7 raises IndexError here (max over zero
            # columns); with no text before the final five tokens there is nothing to repeat.
            return False, None
        mass = self._end_of_text.repetition_mass()
        return mass > REPETITION_ABOVE, mass

    def _track_token(self, token_id):
        if token_id is not None:
            self.generated_tokens.append(token_id)
            if len(self.generated_tokens) > 8:
                self.generated_tokens = self.generated_tokens[-8:]
        # 0.1.7 calls this "3x repetition" but compares only the last two tokens.
        return len(self.generated_tokens) >= 3 and len(set(self.generated_tokens[-2:])) == 1
