"""A character tokenizer for the tiny test model.

Upstream's English tokenizer is a BPE vocabulary fetched from a hub, which nothing here
may do; the tiny model only needs a deterministic text -> ids map of the same shape:
[start_text_token] + ids + [stop_text_token].
"""

from __future__ import annotations

from .config import T3Config

CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'\"-:;()"
UNKNOWN = 1  # 0 is the stop token, as upstream


class CharTokenizer:
    def __init__(self, config: T3Config):
        if len(CHARACTERS) + 2 > config.text_vocab - 1:
            raise ValueError(f"text vocabulary {config.text_vocab} is too small for {len(CHARACTERS)} characters")
        self.start, self.stop = config.start_text_token, config.stop_text_token
        self.ids = {c: 2 + n for n, c in enumerate(CHARACTERS)}

    def encode(self, text: str) -> list[int]:
        """Text tokens with the start and stop tokens the T3 prompt needs."""
        if not text.strip():
            raise ValueError("text is empty")
        body = [self.ids.get(c, UNKNOWN) for c in " ".join(text.lower().split())]
        return [self.start, *body, self.stop]
