"""Chatterbox's sampling-time logit processors in MLX, with transformers' semantics.

Upstream's PyTorch loop (chatterbox-tts 0.1.7, `T3.inference`) runs, each step, on the
CFG-combined, analyzer-edited logits:

    RepetitionPenaltyLogitsProcessor -> logits / temperature (skipped at 1.0)
        -> MinPLogitsWarper -> TopPLogitsWarper -> softmax -> multinomial

mlx-audio samples differently (min_p before temperature, top_p on unnormalised exp(logits)),
so the MLX loop uses the functions here instead. Each mirrors one transformers class as
installed (5.x): filtered entries become -inf, at least one token is always kept, and
-inf/NaN rows pass through the way torch's arithmetic passes them (see `top_p`).

Masks are decided from softmax probabilities, so those are computed the way torch's CPU
kernel does (exp(x - max) * (1 / sum)) with a correctly rounded exp: `mx.exp` is a fast
approximation (up to ~15 ulp on CPU), torch's is within ~0.55 ulp, and a token whose
probability sits near a threshold would otherwise land on the other side of it more often.
Those few float64 steps run on the CPU stream (Metal has no float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

FILTERED = -math.inf  # transformers' default filter_value


@dataclass(frozen=True)
class ProcessorSettings:
    repetition_penalty: float = 1.2
    temperature: float = 0.8
    min_p: float = 0.05
    top_p: float = 0.95

    def __post_init__(self):
        # the ranges transformers' constructors accept (temperature: upstream divides by it)
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")


# -- exact float32 softmax ------------------------------------------------------------------

_LN2 = math.log(2.0)
_TAYLOR = [1.0 / math.factorial(n) for n in range(14)]  # |r| <= ln2/2: truncation < 1e-17


def _exp(d: mx.array) -> mx.array:
    """float32 exp(d) for d <= 0, correctly rounded (but for ~1e-7 of inputs).

    Evaluated in float64 (CPU only in MLX): d = k ln2 + r, exp(r) by Taylor series, 2^k built
    from its exponent bits."""
    with mx.stream(mx.cpu):
        x = mx.clip(d.astype(mx.float64), -200.0, 0.0)  # exp(-200) rounds to 0 in float32
        k = mx.round(x * (1.0 / _LN2))
        r = x - k * _LN2
        series = mx.full(r.shape, _TAYLOR[-1], dtype=mx.float64)
        for c in reversed(_TAYLOR[:-1]):
            series = series * r + c
        scale = mx.view((k.astype(mx.int64) + 1023) << 52, mx.float64)
        y = (series * scale).astype(mx.float32)
        return mx.where(mx.isnan(d), d, y)


def softmax(x: mx.array) -> mx.array:
    """torch's float32 CPU softmax over the last axis: exp(x - max) * (1 / sum).

    torch sums in float32 in an order set by the SIMD width, which cannot be reproduced here,
    so the sum is taken in float64 and rounded: the nearest value to what torch approximates.
    The two sums can still differ by an ulp or two, and that is the one residual difference."""
    e = _exp(x - x.max(axis=-1, keepdims=True))
    with mx.stream(mx.cpu):
        total = e.astype(mx.float64).sum(axis=-1, keepdims=True).astype(mx.float32)
    return e * (1.0 / total)


# -- the processors -------------------------------------------------------------------------

def _ids(token_ids) -> np.ndarray:
    ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
    if ids.size and ids.min() < 0:
        raise ValueError(f"token ids must be >= 0, got {ids.min()}")  # torch.gather raises too
    return ids


def repetition_penalty(logits: mx.array, token_ids, penalty: float) -> mx.array:
    """RepetitionPenaltyLogitsProcessor: each distinct previous token's logit is divided by
    `penalty` if >= 0, else multiplied (NaN stays NaN, -inf stays -inf). Ids past the vocab
    are ignored, as transformers does by clamping them into a dropped padding column."""
    vocab = logits.shape[-1]
    mask = np.zeros(vocab, dtype=bool)
    ids = _ids(token_ids)
    mask[ids[ids < vocab]] = True
    penalized = mx.where(logits < 0, logits * penalty, logits / penalty)
    return mx.where(mx.array(mask), penalized, logits)


def apply_temperature(logits: mx.array, temperature: float) -> mx.array:
    # upstream skips the division at 1.0; x / 1.0 would be the identity anyway
    return logits if temperature == 1.0 else logits / temperature


def min_p(logits: mx.array, min_p: float) -> mx.array:
    """MinPLogitsWarper: drop tokens whose probability is below min_p * the top probability.

    The top token always passes (min_p <= 1), which is what min_tokens_to_keep=1 ensures
    there. A row with a NaN or all -inf has NaN probabilities, every comparison is False, and
    the row passes unchanged."""
    probs = softmax(logits)
    top = probs.max(axis=-1, keepdims=True)
    return mx.where(probs < min_p * top, FILTERED, logits)


def top_p(logits: mx.array, top_p: float) -> mx.array:
    """TopPLogitsWarper: sort ascending, softmax, cumsum; drop tokens whose cumulative
    probability is <= 1 - top_p, always keeping the last (most probable) one.

    As in torch: the cumsum accumulates in float64 and is rounded to float32 (ATen's CPU
    cumsum), the threshold is float32(1 - top_p), and an all -inf or NaN row gets NaN
    cumulative sums, so nothing is dropped.

    Ties (tie rule): tokens with equal logits are ordered by index, so where a tie group
    straddles the cutoff the lower indices are dropped first, and a tie at the top keeps the
    highest index. MLX's CPU argsort guarantees this (stable_sort, index tie-break).
    torch.sort (stable=False) is std::sort: with libstdc++ (Linux, measured) an insertion
    sort, hence the same order, up to 16 entries; above that an introsort whose order
    among ties follows no rule. There the two still drop the same number of tied tokens,
    but may pick different ones; macOS's libc++ was not measured."""
    order = mx.argsort(logits, axis=-1, stream=mx.cpu)
    probs = softmax(mx.take_along_axis(logits, order, axis=-1))
    with mx.stream(mx.cpu):
        cumulative = mx.cumsum(probs.astype(mx.float64), axis=-1).astype(mx.float32)
    drop = cumulative <= (1.0 - top_p)
    drop[..., -1] = False  # min_tokens_to_keep=1
    drop = mx.put_along_axis(mx.zeros(drop.shape, dtype=mx.bool_), order, drop, axis=-1)
    return mx.where(drop, FILTERED, logits)


# -- the pipeline ---------------------------------------------------------------------------

# Each stage: (logits, token_ids, settings) -> logits.
_STAGE_FUNCTIONS = {
    "repetition_penalty": lambda x, ids, s: repetition_penalty(x, ids, float(s.repetition_penalty)),
    "temperature": lambda x, ids, s: apply_temperature(x, s.temperature),
    "min_p": lambda x, ids, s: min_p(x, s.min_p),
    "top_p": lambda x, ids, s: top_p(x, s.top_p),
}
STAGES = ("repetition_penalty", "temperature", "min_p", "top_p")  # chatterbox-tts 0.1.7's order
UPSTREAM_ORDER = STAGES


def _stage(stage):
    if callable(stage):
        return stage
    if stage not in _STAGE_FUNCTIONS:
        raise ValueError(f"unknown processor stage {stage!r}; expected one of {STAGES} or a callable")
    return _STAGE_FUNCTIONS[stage]


def process(logits, token_ids, settings: ProcessorSettings = ProcessorSettings(),
            order=UPSTREAM_ORDER) -> mx.array:
    """Apply the processors to (1, V) or (V,) float32 logits; returns the same shape.

    `token_ids`: every token so far, BOS first (list, numpy or MLX ints). `order`: stage
    names from STAGES, or callables (logits, token_ids, settings) -> logits; tests reorder
    or replace stages to build known-bad variants."""
    x = mx.array(logits, dtype=mx.float32)
    row = x.reshape(1, -1)
    for stage in order:
        row = _stage(stage)(row, token_ids, settings)
    return row.reshape(x.shape)


def process_torch(logits, generated_ids, settings: ProcessorSettings = ProcessorSettings()):
    """The same processing with transformers' classes, exactly as upstream's loop applies
    them. `logits`: (1, V) or (V,) float32 tensor, same shape back; `generated_ids`: (1, n)
    long tensor (or ints), BOS first."""
    import torch
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TopPLogitsWarper,
    )

    x = torch.as_tensor(logits, dtype=torch.float32)
    ids = torch.as_tensor(generated_ids, dtype=torch.long)
    ids = ids[:1] if ids.dim() == 2 else ids.reshape(1, -1)  # upstream: generated_ids[:1, :]
    row = RepetitionPenaltyLogitsProcessor(penalty=float(settings.repetition_penalty))(ids, x.reshape(1, -1))
    if settings.temperature != 1.0:
        row = row / settings.temperature  # upstream: `logits /= temperature`, same values
    row = MinPLogitsWarper(min_p=settings.min_p)(ids, row)
    return TopPLogitsWarper(top_p=settings.top_p)(ids, row).reshape(x.shape)
