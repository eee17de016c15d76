"""The analyzer's step, framework-free: state, decisions, records.

chatterbox-tts 0.1.7's step is a few array operations (average the heads, cut the text
columns, mask, accumulate, argmax, a few maxima) around plain scalar logic. The scalar
logic lives here once; `torch_ref` and `mlx_port` supply the array operations, which is
where a port can go wrong and what the parity suite compares. The thresholds are compared
as float32, as torch compares a float32 tensor with a Python scalar.
"""

from __future__ import annotations

import logging
from typing import Optional

from .common import (
    COMPLETE_MARGIN,
    DISCONTINUITY_WINDOW,
    EOS_SUPPRESSION_MIN_TEXT,
    FALSE_START_HEAD_BELOW,
    FALSE_START_TAIL_ABOVE,
    LLAMA_ALIGNED_HEADS,
    LONG_TAIL_AT_LEAST,
    REPETITION_ABOVE,
    REPETITION_EXCLUDED_TAIL,
    AlignmentAnalysisResult,
    DecisionMargins,
    EndOfTextMass,
    check_eos_idx,
    check_text_tokens_slice,
    to_float32,
)

logger = logging.getLogger("parity.analyzer")

_TAIL_ABOVE = to_float32(FALSE_START_TAIL_ABOVE)
_HEAD_BELOW = to_float32(FALSE_START_HEAD_BELOW)


class AnalyzerBase:
    """Subclasses provide the array operations listed under 'framework operations'."""

    array_api = ""

    def __init__(self, text_tokens_slice, eos_idx):
        self.text_tokens_slice = (i, j) = check_text_tokens_slice(text_tokens_slice)
        self.eos_idx = check_eos_idx(eos_idx)
        self.alignment = self._empty_alignment(j - i)
        self.curr_frame_pos = 0
        self.text_position = 0
        self.started = False
        self.started_at = None
        self.complete = False
        self.completed_at = None
        self.generated_tokens = []
        self.results: list[AlignmentAnalysisResult] = []
        self.margins: list[DecisionMargins] = []
        self.last_aligned_attns = [None] * len(LLAMA_ALIGNED_HEADS)
        self._end_of_text = EndOfTextMass(j - i)

    def cleanup(self):
        """Undo what the analyzer did to a model (nothing, without one). Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.cleanup()
        return False

    def step(self, logits, next_token=None):
        """Analyze the attention of the frame just decoded; return the (possibly edited) logits."""
        # Every input check happens before any state changes, in one order for all ports.
        alignment, chunk, frame_position = self._frame(self._captured())
        logits = self._checked_logits(logits)
        token_id = self._token_id(next_token)

        self.alignment = A = alignment
        T, S = self._shape(A)
        position_jump = frame_position - self.text_position
        discontinuity = not (DISCONTINUITY_WINDOW[0] < position_jump < DISCONTINUITY_WINDOW[1])
        if not discontinuity:
            self.text_position = frame_position

        false_start, tail_attention, head_attention = self._false_start(A)
        self.started = not false_start
        self._mark_started(T)

        if self.complete:  # rows after completed_at: every row of a step after the completing one
            self._end_of_text.add_rows(self._rows(chunk))
        self.complete = self.complete or self.text_position >= S - COMPLETE_MARGIN
        if self.complete and self.completed_at is None:
            self.completed_at = T

        long_tail_mass = self._end_of_text.long_tail_mass() if self.complete else None
        long_tail = long_tail_mass is not None and long_tail_mass >= LONG_TAIL_AT_LEAST
        repetition_mass = self._repetition_mass(S)
        repetition = repetition_mass is not None and repetition_mass > REPETITION_ABOVE
        token_repetition = self._track_token(token_id)

        eos_suppressed = frame_position < S - COMPLETE_MARGIN and S > EOS_SUPPRESSION_MIN_TEXT
        eos_forced = long_tail or repetition or token_repetition
        if eos_forced:
            logger.warning(
                "analyzer forces EOS at frame %d: long_tail=%s repetition=%s token_repetition=%s",
                self.curr_frame_pos, long_tail, repetition, token_repetition,
            )
        logits = self._edit_logits(logits, eos_suppressed, eos_forced)

        self.results.append(AlignmentAnalysisResult(
            false_start=false_start, long_tail=long_tail, repetition=repetition,
            discontinuity=discontinuity, complete=self.complete, position=self.text_position,
        ))
        self.margins.append(DecisionMargins(
            frame_position=frame_position, position_jump=position_jump,
            tail_attention=tail_attention, head_attention=head_attention,
            long_tail_mass=long_tail_mass, repetition_mass=repetition_mass,
            token_repetition=token_repetition, eos_suppressed=eos_suppressed, eos_forced=eos_forced,
        ))
        self.curr_frame_pos += 1
        return logits

    # ---- decisions ---------------------------------------------------------------------------

    def _false_start(self, A):
        if self.started:
            return False, None, None
        tail, head = self._false_start_stats(A)
        return tail > _TAIL_ABOVE or head < _HEAD_BELOW, tail, head

    def _mark_started(self, T):
        if self.started and self.started_at is None:
            self.started_at = T

    def _repetition_mass(self, S) -> Optional[float]:
        if not self.complete or S <= REPETITION_EXCLUDED_TAIL:
            # Deviation "short-text-repetition": 0.1.7 raises IndexError here (a max over zero
            # columns); with no text before the final five tokens there is nothing to repeat.
            return None
        return self._end_of_text.repetition_mass()

    def _track_token(self, token_id) -> bool:
        if token_id is not None:
            self.generated_tokens.append(token_id)
            if len(self.generated_tokens) > 8:
                self.generated_tokens = self.generated_tokens[-8:]
        # 0.1.7 calls this "3x repetition" but compares only the last two tokens.
        return len(self.generated_tokens) >= 3 and len(set(self.generated_tokens[-2:])) == 1

    # ---- framework operations ----------------------------------------------------------------

    def _empty_alignment(self, text_len):
        """A (0, text_len) float32 array."""
        raise NotImplementedError

    def _captured(self):
        """`last_aligned_attns` as native arrays, checked: present, shapes, one supported dtype."""
        raise NotImplementedError

    def _frame(self, attns):
        """(alignment with this frame's rows appended, the rows, argmax of the last row).
        Raises the non-finite error, if any, before returning."""
        raise NotImplementedError

    def _shape(self, A) -> tuple[int, int]:
        return tuple(int(n) for n in A.shape)

    def _false_start_stats(self, A) -> tuple[float, float]:
        """(max of A[-2:, -2:], max of A[:, :4]) as Python floats."""
        raise NotImplementedError

    def _rows(self, chunk) -> list[list[float]]:
        return chunk.tolist()

    def _checked_logits(self, logits):
        raise NotImplementedError

    def _token_id(self, next_token) -> Optional[int]:
        raise NotImplementedError

    def _edit_logits(self, logits, eos_suppressed: bool, eos_forced: bool):
        raise NotImplementedError
