"""Hypothesis strategies for generated analyzer traces.

Hypothesis draws the structure (dtype, prompt layout, text length, step count, vocabulary,
value regime, tokens) and the special values and where they go; bulk values come from a
numpy generator seeded by a drawn integer, so examples stay cheap and reproducible.
"""

import numpy as np
from hypothesis import event
from hypothesis import strategies as st

from parity.replay import TraceInputs

DTYPES = ("float32", "float16", "bfloat16")
VALUE_MODES = ("walk", "uniform", "ties", "extreme", "thresholds")

F32_TENTH = float(np.float32(0.1))
SPECIAL_VALUES = (
    0.0, -0.0, 1.0, 0.5, F32_TENTH, 5.0,
    float(np.nextafter(np.float32(0.1), np.float32(1))), float(np.nextafter(np.float32(0.1), np.float32(0))),
    float(np.nextafter(np.float32(0.5), np.float32(1))), float(np.nextafter(np.float32(0.5), np.float32(0))),
    1e-45, 1e-40, 1.1754944e-38, 1e-8, 65504.0, 65520.0, 3.0e38,
)
NON_FINITE = (float("nan"), float("inf"), float("-inf"))
TOKENS = st.one_of(st.none(), st.integers(0, 3))  # a tiny alphabet makes repeats common


def _values(rng, mode: str, shape, text: tuple[int, int], step: int, walk: list[int]) -> np.ndarray:
    if mode == "uniform":
        return rng.random(shape, dtype=np.float32)
    if mode == "ties":
        return rng.choice(np.float32([0, 0.25, 0.5, 1.0]), shape)
    if mode == "extreme":
        return rng.choice(np.float32([0, 1e-45, 1e-40, 1e-30, 1e-8, 0.5, 1, 1e4, 3e38]), shape)
    if mode == "thresholds":
        return rng.choice(np.float32(SPECIAL_VALUES[:10]), shape)
    # "walk": a peak that wanders through the text like a (sometimes erratic) read.
    i, j = text
    values = rng.random(shape, dtype=np.float32) * np.float32(0.05)
    mass = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    if step:
        values[:, -1, i + walk[step]] += mass
    else:
        values[:, j:, i + walk[step]] += mass[:, None]
    return values


def _walk(rng, n_steps: int, text_len: int) -> list[int]:
    position, walk = 0, []
    for _ in range(n_steps):
        position = int(np.clip(position + rng.choice([0, 0, 1, 1, 2, -5, 8]), 0, text_len - 1))
        walk.append(position)
    return walk


@st.composite
def generated_traces(draw, invalid: bool = True, non_finite: bool = True):
    dtype = draw(st.sampled_from(DTYPES))
    cond_len, text_len, n_bos = draw(st.integers(0, 5)), draw(st.integers(1, 12)), draw(st.integers(1, 3))
    n_steps = draw(st.integers(1, 24))
    vocab = draw(st.integers(1, 10))
    eos_idx = draw(st.integers(0, vocab - 1))
    mode = draw(st.sampled_from(VALUE_MODES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    i, j = cond_len, cond_len + text_len
    t0 = j + n_bos
    walk = _walk(rng, n_steps, text_len)

    attns = []
    for k in range(n_steps):
        shape = (3, t0, t0) if k == 0 else (3, draw(st.sampled_from((1, 1, 1, 2))), t0 + k)
        attns.append(_values(rng, mode, shape, (i, j), k, walk))
    for _ in range(draw(st.integers(0, 4))):
        _put(draw, attns, draw(st.sampled_from(SPECIAL_VALUES)))
    if non_finite and draw(st.integers(0, 9)) == 0:
        _put(draw, attns, draw(st.sampled_from(NON_FINITE)))
        event("non-finite attention")

    logits = [rng.normal(0, 3, (1, vocab)).astype(np.float32) for _ in range(n_steps)]
    for _ in range(draw(st.integers(0, 2))):
        k, v = draw(st.integers(0, n_steps - 1)), draw(st.integers(0, vocab - 1))
        logits[k][0, v] = draw(st.sampled_from(NON_FINITE + (3e38, -3e38, 0.0)))

    if invalid and draw(st.integers(0, 19)) == 0:
        fault = draw(st.sampled_from(("few keys", "few rows", "eos")))
        event(f"invalid input: {fault}")
        k = draw(st.integers(0, n_steps - 1))
        if fault == "few keys":
            attns[k] = attns[k][:, :, : j - 1].copy()
        elif fault == "few rows":
            attns[0] = attns[0][:, :j].copy()
        else:
            eos_idx = vocab
    event(f"dtype {dtype}, values {mode}")
    return TraceInputs(
        text_tokens_slice=(i, j),
        eos_idx=eos_idx,
        dtype=dtype,
        attns=attns,
        logits=logits,
        prev_tokens=[draw(TOKENS) for _ in range(n_steps)],
    )


def _put(draw, attns, value):
    k = draw(st.integers(0, len(attns) - 1))
    _, lq, lk = attns[k].shape
    attns[k][draw(st.integers(0, 2)), draw(st.integers(0, lq - 1)), draw(st.integers(0, lk - 1))] = value
