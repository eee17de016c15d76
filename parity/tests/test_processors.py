"""The MLX processors against transformers' as upstream's loop applies them, and the shared
sampler. One helper runs both and compares: identical -inf, +inf and NaN positions, finite
values within 1e-6 relative (on CPU they are bit-identical)."""

import math
import sys

import mlx.core as mx
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from parity.analyzer.common import EOS_SUPPRESSED_LOGIT, FORCED_EOS_LOGIT
from parity.model import processors as P
from parity.model.processors import ProcessorSettings, process, process_torch
from parity.model.sampling import SeededUniforms, pick_token, sample_native_mlx, sample_native_torch

BOS, EOS, VOCAB = 6561, 6562, 8194  # Chatterbox's speech vocabulary
DEFAULT = ProcessorSettings()
ALONE = {  # each processor on its own; the others at values that change nothing
    "repetition_penalty": ProcessorSettings(1.2, 1.0, 0.0, 1.0),
    "temperature": ProcessorSettings(1.0, 0.8, 0.0, 1.0),
    "min_p": ProcessorSettings(1.0, 1.0, 0.05, 1.0),
    "top_p": ProcessorSettings(1.0, 1.0, 0.0, 0.95),
}
RTOL = 1e-6
# torch.sort on CPU is std::sort, unstable. libstdc++'s (Linux) insertion-sorts up to 16
# entries, keeping ties in index order like MLX's stable argsort; measured below. Other C++
# libraries (libc++ on macOS) are not measured, so there ties may be dropped in any order.
STABLE_UP_TO = 16 if sys.platform == "linux" else 1
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="the tie order was measured with libstdc++")


def normal(n, seed=0, scale=3.0, ninf=0.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    x[rng.random(n) < ninf] = -np.inf
    return x[None]


def run_both(logits, ids=(BOS,), settings=DEFAULT, order=P.UPSTREAM_ORDER):
    logits = np.asarray(logits, dtype=np.float32)
    t = process_torch(torch.from_numpy(logits.copy()), torch.tensor([list(ids)]), settings).numpy()
    m = np.array(process(mx.array(logits), list(ids), settings, order=order))
    return t, m


def difference(t, m, any_tie_order=None):
    """None if the MLX output `m` matches torch's `t`, else what differs.

    any_tie_order: tokens tied at top_p's input may be dropped in another order, as long as
    the kept values agree as a multiset (so only tied tokens can trade places). Default:
    for rows longer than STABLE_UP_TO, where torch's tie order has no rule."""
    if any_tie_order is None:
        any_tie_order = t.shape[-1] > STABLE_UP_TO
    if t.shape != m.shape:
        return f"shape {t.shape} vs {m.shape}"
    for name, kind in (("NaN", np.isnan), ("+inf", np.isposinf)):
        if (kind(t) != kind(m)).any():
            return f"{name} at torch {np.flatnonzero(kind(t))}, mlx {np.flatnonzero(kind(m))}"
    masked_t, masked_m = np.isneginf(t), np.isneginf(m)
    both = np.isfinite(t) & np.isfinite(m)
    d = np.abs(t[both].astype(np.float64) - m[both])
    if (d > RTOL * np.abs(t[both])).any():
        return f"finite values differ, max |d| = {d.max():.3g}"
    if (masked_t == masked_m).all():
        return None
    if any_tie_order and np.array_equal(np.sort(t, None), np.sort(m, None), equal_nan=True):
        return None
    return (f"-inf masks differ: torch only {np.flatnonzero(masked_t & ~masked_m)}, "
            f"mlx only {np.flatnonzero(masked_m & ~masked_t)}")


def check(logits, ids=(BOS,), settings=DEFAULT, any_tie_order=None):
    """Assert MLX matches torch on this input; return max |d| over the finite values."""
    t, m = run_both(logits, ids, settings)
    diff = difference(t, m, any_tie_order)
    assert diff is None, diff
    both = np.isfinite(t) & np.isfinite(m)
    return float(np.abs(t[both] - m[both]).max(initial=0.0))


# -- logits recorded from the PyTorch T3 -------------------------------------------------------

def test_recorded_logits_process_alike():
    """Every step of every model trace: MLX's processors on the analyzer's output give what
    transformers' gave in the recording (the processors' own inputs, so no model error)."""
    from parity.fixtures import fixture_names
    from parity.model.trace import MODEL_TRACES_DIR, load_model_trace

    checked = 0
    for name in fixture_names(MODEL_TRACES_DIR):
        trace = load_model_trace(name)
        settings = trace.generation_settings().processors
        history = [trace.analyzer.steps[0].prev_token]
        for k, token in enumerate(trace.tokens):
            got = np.array(process(mx.array(trace.analyzer.logits_out[k : k + 1]), history, settings))
            diff = difference(trace.logits_processed[k : k + 1], got)
            assert diff is None, f"{name} step {k}: {diff}"
            history.append(token)
            checked += 1
    assert checked >= 600


# -- random logits ----------------------------------------------------------------------------

@pytest.mark.parametrize("temperature", [0.8, 1.0])
def test_random_logits_sizes_2_to_300(temperature):
    settings = ProcessorSettings(temperature=temperature)
    worst = max(check(normal(n, seed=n, scale=0.5 + n % 5), [0, 1, n // 2, n - 1], settings) for n in range(2, 301))
    assert worst == 0.0 or mx.default_device() != mx.cpu, worst  # bit-identical on CPU


@pytest.mark.parametrize("stage", ALONE)
def test_each_processor_alone(stage):
    for n in (2, 7, 16, 17, 64, 300):
        check(normal(n, seed=n), [0, 1, n - 1], ALONE[stage])


@pytest.mark.parametrize("settings", [
    ProcessorSettings(0.8, 1.5, 0.2, 0.5),  # penalty < 1 rewards repeats
    ProcessorSettings(2.0, 0.3, 0.0, 0.3),
    ProcessorSettings(1.2, 0.8, 1.0, 0.95),  # min_p = 1: only the top survives
    ProcessorSettings(1.2, 0.8, 0.05, 0.0),  # top_p = 0: only the top survives
], ids=str)
def test_other_settings(settings):
    for seed in range(20):
        check(normal(50, seed=seed), [BOS % 50, 3, 3, 7], settings)


def test_vocab_size_logits():
    for seed in range(5):
        check(normal(VOCAB, seed=seed, scale=4.0), [BOS, 5, 17, 5, EOS - 1])


# -- ties -------------------------------------------------------------------------------------

def test_tie_at_the_top_keeps_the_higher_index():
    t, m = run_both(np.float32([[2.0, 5.0, 5.0, 1.0]]), settings=ProcessorSettings(1.0, 1.0, 0.0, 0.4))
    assert difference(t, m) is None and np.isfinite(m).tolist() == [[False, False, True, False]]


@pytest.mark.parametrize("n, top_p", [(16, 0.5), (10, 0.75), (5, 0.3), (16, 0.95)])
def test_uniform_row_ties_straddle_the_top_p_cutoff(n, top_p):
    check(np.zeros((1, n), np.float32), settings=ProcessorSettings(1.0, 1.0, 0.0, top_p))


def test_tie_groups_at_the_cutoff_small_vocab():
    for seed in range(40):  # few distinct values: tie groups land on the cutoff often
        x = np.random.default_rng(seed).choice(np.float32([-1, 0, 0.5, 2]), (1, 2 + seed % 15))
        for top_p in (0.3, 0.6, 0.95):
            check(x, [0, 1], ProcessorSettings(1.2, 0.8, 0.0, top_p))


def test_tie_groups_at_the_cutoff_large_vocab_agree_up_to_tie_order():
    for seed in range(10):
        check(np.round(normal(300, seed=seed) * 2) / 2, [BOS % 300, 4], ProcessorSettings(1.2, 0.8, 0.0, 0.95))


@linux_only
def test_torch_cpu_sort_keeps_ties_in_index_order_only_up_to_16():
    """The tie rule, measured: torch.sort (unstable) is an insertion sort up to 16 entries
    (ties stay in index order, as in MLX's stable argsort) and an introsort above."""
    rng = np.random.default_rng(0)
    stable = lambda x: np.array_equal(torch.sort(torch.from_numpy(x))[1].numpy(), np.argsort(x, kind="stable"))
    assert all(stable(rng.integers(0, 3, n).astype(np.float32)) for n in range(2, 17) for _ in range(20))
    assert not stable(np.zeros(17, np.float32))


def test_up_to_tie_order_still_catches_a_wrong_count():
    t, m = run_both(np.zeros((1, 20), np.float32), settings=ProcessorSettings(1.0, 1.0, 0.0, 0.5))
    m[0, np.flatnonzero(np.isfinite(m[0]))[0]] = -np.inf  # one more token dropped
    assert difference(t, m, any_tie_order=True) is not None


# -- special values ---------------------------------------------------------------------------

def test_logits_with_neg_inf_entries():
    for seed in range(30):
        x = normal(40 + seed, seed=seed, ninf=0.3)
        check(x, [0, 1, 2, 3, int(np.flatnonzero(np.isneginf(x[0]))[0])])


def test_analyzer_forced_eos():
    x = np.full((1, VOCAB), EOS_SUPPRESSED_LOGIT, np.float32)
    x[0, EOS] = FORCED_EOS_LOGIT
    check(x, [BOS, 1, 2])
    assert np.isfinite(run_both(x, [BOS])[1]).sum() == 1


def test_analyzer_suppressed_eos():
    x = normal(VOCAB, seed=1)
    x[0, EOS] = EOS_SUPPRESSED_LOGIT
    check(x, [BOS, EOS - 1, EOS - 1])


def test_all_neg_inf_row_passes_through_as_all_neg_inf():
    t, m = run_both(np.full((1, 12), -np.inf, np.float32), [0, 3])
    assert np.isneginf(t).all() and np.isneginf(m).all()  # softmax is NaN: nothing to drop


@pytest.mark.parametrize("where", [[3], [0, 1, 2, 3, 4, 5, 6, 7]])
def test_nan_rows_pass_through_unmasked(where):
    x = normal(8, seed=2)
    x[0, where] = np.nan
    check(x, [0, 3])
    assert not np.isneginf(run_both(x, [0, 3])[0]).any()  # transformers masks nothing


def test_pos_inf_logit():
    x = normal(20, seed=3)
    x[0, 4] = np.inf
    check(x, [4, 5])


# -- repetition penalty -----------------------------------------------------------------------

def test_repetition_penalty_repeats_negatives_and_bos():
    x = np.float32([[-3.0, -0.5, 0.0, -0.0, 0.5, 3.0, 1.0, -1.0]])
    ids = [7, 0, 0, 1, 1, 1, 3, 4, 5, 5]
    check(x, ids, ALONE["repetition_penalty"])
    check(x, ids, ProcessorSettings(repetition_penalty=0.7))


def test_repetition_penalty_ignores_ids_past_the_vocab():
    check(normal(10, seed=4), [BOS, 9, 10, 11, 500], ALONE["repetition_penalty"])


def test_token_ids_as_list_numpy_or_mlx_agree():
    x = mx.array(normal(30, seed=5))
    ids = [0, 4, 4, 29]
    a, b, c = (np.array(process(x, i)) for i in (ids, np.array(ids), mx.array(ids)))
    assert np.array_equal(a, b) and np.array_equal(a, c)


def test_one_dimensional_logits_keep_their_shape():
    x = normal(30, seed=6)[0]
    assert process(mx.array(x), [0]).shape == (30,)
    assert np.array_equal(np.array(process(mx.array(x), [0])), process_torch(torch.from_numpy(x), [0]).numpy())


def test_invalid_settings_and_ids_are_refused():
    with pytest.raises(ValueError):
        ProcessorSettings(top_p=1.5)
    with pytest.raises(ValueError):
        ProcessorSettings(temperature=0.0)
    with pytest.raises(ValueError):
        process(mx.array(normal(5)), [-1])
    with pytest.raises(ValueError):
        process(mx.array(normal(5)), [0], order=("top_k",))


# -- property ---------------------------------------------------------------------------------

VALUES = st.one_of(st.floats(-40, 40, width=32), st.sampled_from([-math.inf, 0.0, 1.0, -1.0, 2.5]))
SETTINGS = st.builds(
    ProcessorSettings,
    repetition_penalty=st.floats(0.5, 2.0),
    temperature=st.one_of(st.just(1.0), st.floats(0.2, 2.0)),
    min_p=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    top_p=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
)


@given(st.lists(VALUES, min_size=2, max_size=40), st.lists(st.integers(0, 45), min_size=1, max_size=8), SETTINGS)
def test_property_mlx_matches_transformers(values, ids, settings):
    t, m = run_both(np.float32([values]), ids, settings)
    diff = difference(t, m)
    assert diff is None, diff


# -- known-bad variants: the comparison must notice them ---------------------------------------

def top_p_unnormalised(x, ids, s):
    """top_p over exp(logits) as if they were probabilities (no softmax), like mlx-audio."""
    order = mx.argsort(x, axis=-1)
    cumulative = mx.cumsum(mx.exp(mx.take_along_axis(x, order, axis=-1)), axis=-1)
    drop = mx.put_along_axis(mx.zeros(x.shape, mx.bool_), order, cumulative <= 1 - s.top_p, axis=-1)
    return mx.where(drop, -math.inf, x)


def top_p_ties_reversed(x, ids, s):
    return P.top_p(x[..., ::-1], s.top_p)[..., ::-1]  # ties dropped highest index first


@pytest.mark.parametrize("order, logits, settings", [
    (("repetition_penalty", "temperature", "min_p", top_p_unnormalised), normal(50, seed=7, scale=1.0), DEFAULT),
    (("repetition_penalty", "min_p", "temperature", "top_p"), normal(300, seed=8, scale=2.0), DEFAULT),
    pytest.param((*P.STAGES[:3], top_p_ties_reversed), np.zeros((1, 16), np.float32), ProcessorSettings(top_p=0.5),
                 marks=linux_only),
], ids=["top_p unnormalised", "min_p before temperature", "ties reversed"])
def test_known_bad_variants_are_caught(order, logits, settings):
    t, m = run_both(logits, [BOS % logits.shape[-1], 1, 2], settings, order=order)
    assert difference(t, m) is not None


# -- shared sampler ---------------------------------------------------------------------------

PROBS = np.array([0.1, 0.2, 0.3, 0.4])


def test_seeded_uniforms_repeat_per_seed_and_record_draws():
    a, b, c = SeededUniforms(3), SeededUniforms(3), SeededUniforms(4)
    draws = [a.next() for _ in range(50)]
    assert draws == [b.next() for _ in range(50)] == a.draws != [c.next() for _ in range(50)]
    assert all(0.0 <= u < 1.0 for u in draws)


def test_pick_token_is_deterministic():
    x = normal(300, seed=10)
    assert len({pick_token(x, 0.4321) for _ in range(5)}) == 1


def test_pick_token_never_picks_a_masked_token():
    x = normal(200, seed=11, ninf=0.7)
    assert all(np.isfinite(x[0, pick_token(x, u)]) for u in np.linspace(0, 1, 2001, endpoint=False))


def test_pick_token_follows_the_distribution():
    picks = np.array([pick_token(np.log(PROBS), u) for u in np.random.default_rng(12).random(4000)])
    assert np.allclose(np.bincount(picks, minlength=4) / picks.size, PROBS, atol=0.03)


def test_pick_token_cdf_boundaries():
    x = np.float32([-np.inf, -np.inf, 0.0, 1.0, 0.5, -np.inf])
    assert pick_token(x, 0.0) == 2
    assert pick_token(x, float(np.nextafter(1.0, 0.0))) == 4
    y = np.log(PROBS).astype(np.float32)
    assert [pick_token(y, u) for u in (0.0999, 0.1001, 0.2999, 0.3001, 0.5999, 0.6001)] == [0, 1, 1, 2, 2, 3]


@pytest.mark.parametrize("logits", [[-np.inf] * 4, [0.0, np.nan, 1.0], [0.0, np.inf], []], ids=str)
def test_pick_token_refuses_rows_without_a_distribution(logits):
    with pytest.raises(ValueError):
        pick_token(np.float32(logits), 0.5)


def test_pick_token_refuses_u_outside_unit_interval():
    with pytest.raises(ValueError):
        pick_token(np.zeros(3, np.float32), 1.0)


def test_both_frameworks_processed_logits_give_the_same_tokens():
    uniforms = SeededUniforms(0)
    for seed in range(50):
        t, m = run_both(normal(VOCAB // 8, seed=seed), [BOS % 1024, seed])
        u = uniforms.next()
        assert pick_token(t, u) == pick_token(m, u)


def test_processed_all_masked_row_cannot_be_sampled():
    t, m = run_both(np.full((1, 6), -np.inf, np.float32))
    for row in (t, m):
        with pytest.raises(ValueError, match="-inf"):
            pick_token(row, 0.5)


def test_native_samplers_only_draw_unmasked_tokens():
    x = np.full((1, 10), -np.inf, np.float32)
    x[0, 6] = 0.0
    assert sample_native_torch(torch.from_numpy(x), torch.Generator().manual_seed(0)) == 6
    assert sample_native_mlx(mx.array(x), mx.random.key(0)) == 6
