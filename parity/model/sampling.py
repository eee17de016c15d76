"""Sampling that both frameworks share, so equal processed logits give equal tokens.

torch.multinomial and mx.random.categorical draw from different generators, so with them
two equal runs part at the first sampled step. The shared sampler instead takes one seeded
uniform per step and inverts the CDF of softmax(processed logits) in float64 with numpy; it
samples from the same distribution as upstream's `multinomial(softmax(logits))`.
"""

from __future__ import annotations

import numpy as np


class SeededUniforms:
    """One uniform draw in [0, 1) per decoding step, from numpy's PCG64; keeps them all."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.draws: list[float] = []

    def next(self) -> float:
        u = float(self.rng.random())
        self.draws.append(u)
        return u


def _weights(logits) -> np.ndarray:
    """exp(x - max) in float64 from float32 logits: softmax without the division; -inf
    (masked) entries get exactly 0.

    Raises ValueError where there is no distribution: any NaN or +inf (softmax is NaN there
    and torch.multinomial raises), or every entry -inf (nothing left to sample)."""
    x = np.asarray(logits, dtype=np.float32).reshape(-1).astype(np.float64)
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError("cannot sample: the logits contain NaN or +inf")
    if x.size == 0 or np.isneginf(x).all():
        raise ValueError("cannot sample: every logit is -inf (all tokens masked)")
    return np.exp(x - x.max())


def pick_token(logits, u: float) -> int:
    """Inverse-CDF pick over softmax(logits): the smallest i with cdf[i] > u * cdf[-1].

    The cdf is left unnormalised and u scaled by its total, so it needs no sum to be exactly
    1. A token whose probability does not move the cdf (masked, or too small to register)
    owns an empty interval and is never picked; u = 0 picks the first token that does."""
    if not 0.0 <= u < 1.0:
        raise ValueError(f"u must be in [0, 1), got {u}")
    cdf = np.cumsum(_weights(logits))
    # cdf[-1] >= 1 (the top token weighs 1) and u <= 1 - 2**-53, so u * cdf[-1] rounds
    # below cdf[-1]: the index is always in range and never a trailing masked token
    return int(np.searchsorted(cdf, u * cdf[-1], side="right"))


def sample_native_torch(logits, generator=None) -> int:
    """Upstream's own sampler: torch.multinomial(torch.softmax(logits, -1), 1)."""
    import torch

    probs = torch.softmax(torch.as_tensor(logits).reshape(1, -1), dim=-1)
    return int(torch.multinomial(probs, num_samples=1, generator=generator).view(-1)[0])


def sample_native_mlx(logits, key=None) -> int:
    """MLX's own sampler: mx.random.categorical over the logits (-inf never drawn)."""
    import mlx.core as mx

    return int(mx.random.categorical(mx.array(logits).reshape(1, -1), key=key).item())
