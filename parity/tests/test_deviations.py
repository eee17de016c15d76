"""Both sides of every entry in the deviation ledger (parity/deviations.py): what 0.1.7
does, run for real, and what we do instead."""

import ast
import inspect
import logging

import mlx.core as mx
import numpy as np
import pytest
import torch

from parity.analyzer.common import AnalyzerInputError
from parity.analyzer.mlx_port import AlignmentStreamAnalyzer as MlxPort
from parity.analyzer.torch_ref import AlignmentStreamAnalyzer as Reference
from parity.deviations import LEDGER
from parity.oracle import OracleUnavailable, oracle_class
from parity.replay import TraceInputs, run_trace
from parity.tests.test_oracle import fixture_inputs

OURS = (Reference, MlxPort)


@pytest.fixture(scope="module")
def oracle():
    try:
        return oracle_class()
    except OracleUnavailable as e:
        pytest.skip(f"chatterbox-tts 0.1.7 could not be fetched, so its side cannot be shown: {e}")


def test_every_ledger_entry_names_tests_that_exist():
    here = {node.name for node in ast.parse(inspect.getsource(inspect.getmodule(test_every_ledger_entry_names_tests_that_exist))).body
            if isinstance(node, ast.FunctionDef)}
    for deviation in LEDGER:
        assert len(deviation.tests) == 2, deviation.id
        missing = set(deviation.tests) - here
        assert not missing, f"ledger entry {deviation.id} names missing tests {missing}"


# ---- short-text-repetition ---------------------------------------------------------------


def test_short_text_reference_raises_index_error(oracle):
    outcomes = list(run_trace(fixture_inputs("short_text_s5"), oracle, catch=(Exception,)))
    assert outcomes[-1].error == "IndexError"
    assert outcomes[-2].state["complete"] is False  # it dies on the very step that completes


@pytest.mark.parametrize("cls", OURS)
def test_short_text_ours_skips_repetition(cls):
    outcomes = list(run_trace(fixture_inputs("short_text_s5"), cls))
    completing = next(k for k, o in enumerate(outcomes) if o.state["complete"])
    assert completing > 0 and all(o.error is None for o in outcomes)
    after = outcomes[completing:]
    assert all(o.result["repetition"] is False and o.margins["repetition_mass"] is None for o in after)
    assert all(o.margins["long_tail_mass"] is not None for o in after)  # the other end-of-text check still runs


# ---- hook-cleanup ------------------------------------------------------------------------


def tiny_llama():
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=14, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=16, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaModel(config).eval()


def hook_count(model, module=None) -> int:
    """Forward hooks on the attention modules (only those defined in `module`, if given).

    transformers itself installs one persistent output-capturing hook per attention module
    the first time a forward runs with output_attentions, so totals are compared to a
    baseline taken after the first inference."""
    return sum(
        module is None or hook.__module__ == module
        for layer in model.layers
        for hook in layer.self_attn._forward_hooks.values()
    )


def test_hooks_reference_leaks(oracle):
    model = tiny_llama()
    base = oracle.__mro__[1]  # 0.1.7's class itself, constructed on a real model
    for _ in range(2):
        base(model, None, text_tokens_slice=(2, 6), eos_idx=0)
    assert hook_count(model) == 6  # three per construction, never removed
    assert model.config._attn_implementation == "eager" and model.config.output_attentions is True
    assert not hasattr(base, "cleanup")


def test_hooks_ours_cleaned_up():
    model, ours = tiny_llama(), Reference.__module__
    totals = []
    for _ in range(3):  # sequential inferences
        with Reference(model, None, text_tokens_slice=(2, 6), eos_idx=0) as analyzer:
            assert hook_count(model, ours) == 3 and model.config._attn_implementation == "eager"
            with torch.no_grad():
                model(inputs_embeds=torch.randn(2, 8, 64))
            assert all(a is not None and tuple(a.shape) == (8, 8) for a in analyzer.last_aligned_attns)
        assert hook_count(model, ours) == 0
        assert model.config._attn_implementation == "sdpa" and model.config.output_attentions is False
        totals.append(hook_count(model))
    assert totals[0] == totals[1] == totals[2]  # back to the same baseline after every inference
    analyzer.cleanup()  # idempotent
    assert hook_count(model, ours) == 0
    with pytest.raises(RuntimeError, match="mid-generation"):
        with Reference(model, None, text_tokens_slice=(2, 6)):
            raise RuntimeError("mid-generation")
    assert hook_count(model, ours) == 0 and model.config._attn_implementation == "sdpa"


# ---- eager-three-layers ------------------------------------------------------------------


def layers_returning_weights(model) -> set[int]:
    returned = {}
    handles = [layer.self_attn.register_forward_hook(lambda m, a, out, k=k: returned.__setitem__(k, out[1] is not None))
               for k, layer in enumerate(model.layers)]
    with torch.no_grad():
        model(inputs_embeds=torch.randn(2, 8, 64))
    for handle in handles:
        handle.remove()
    return {k for k, has_weights in returned.items() if has_weights}


def test_eager_reference_switches_whole_model(oracle):
    model = tiny_llama()
    oracle.__mro__[1](model, None, text_tokens_slice=(2, 6), eos_idx=0)
    assert layers_returning_weights(model) == set(range(14))


def test_eager_ours_only_aligned_layers():
    from parity.model.t3_torch import eager_aligned_layers

    model = tiny_llama()
    with eager_aligned_layers(model), Reference(model, None, text_tokens_slice=(2, 6), eager_attention=False) as analyzer:
        assert layers_returning_weights(model) == {9, 12, 13}
        assert all(a is not None for a in analyzer.last_aligned_attns)
        assert model.config.output_attentions is False
    assert layers_returning_weights(model) == set() and model.config._attn_implementation == "sdpa"


# ---- input-validation --------------------------------------------------------------------

GOOD = [np.random.default_rng(0).random((8, 8), dtype=np.float32) for _ in range(3)]
# (name, slice, attns, logits width, eos, what 0.1.7 does)
MALFORMED = [
    ("empty slice", (2, 2), GOOD, 4, 0, "IndexError"),
    ("missing capture", (2, 6), [GOOD[0], None, GOOD[2]], 4, 0, "TypeError"),
    ("shape mismatch", (2, 6), [GOOD[0], GOOD[1], np.zeros((8, 9), np.float32)], 4, 0, "RuntimeError"),
    ("too few rows", (2, 6), [g[:6] for g in GOOD], 4, 0, "IndexError"),
    ("too few keys", (2, 6), [g[:, :5] for g in GOOD], 4, 0, "RuntimeError"),
    ("no EOS column", (0, 6), GOOD, 4, 7, "IndexError"),
    ("float64 attention", (2, 6), [g.astype(np.float64) for g in GOOD], 4, 0, "proceeds"),
]
CODES = {"empty slice": "slice", "missing capture": "missing", "shape mismatch": "shape", "too few rows": "shape",
         "too few keys": "shape", "no EOS column": "eos", "float64 attention": "dtype"}


def step_torch(cls, text_slice, attns, width, eos):
    analyzer = cls(text_tokens_slice=text_slice, eos_idx=eos)
    analyzer.last_aligned_attns = [None if a is None else torch.from_numpy(a.copy()) for a in attns]
    analyzer.step(torch.zeros(1, width))
    return analyzer


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_invalid_input_reference_fails_or_proceeds(oracle, case):
    name, text_slice, attns, width, eos, expected = case
    try:
        step_torch(oracle, text_slice, attns, width, eos)
        outcome = "proceeds"
    except Exception as e:  # noqa: BLE001 - recording whatever 0.1.7 raises is the point
        assert not isinstance(e, ValueError)
        outcome = type(e).__name__
    assert outcome == expected


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
@pytest.mark.parametrize("cls", OURS)
def test_invalid_input_ours_refuses_cleanly(cls, case):
    name, text_slice, attns, width, eos, _ = case
    with pytest.raises(AnalyzerInputError) as caught:
        analyzer = cls(text_tokens_slice=text_slice, eos_idx=eos)
        arrays = [None if a is None else (a if cls is MlxPort else torch.from_numpy(a.copy())) for a in attns]
        analyzer.last_aligned_attns = arrays
        logits = mx.zeros((1, width)) if cls is MlxPort else torch.zeros(1, width)
        analyzer.step(logits)
    assert caught.value.code == CODES[name]
    if name != "empty slice":  # refused before any state changed
        assert analyzer.curr_frame_pos == 0 and analyzer.alignment.shape[0] == 0


# ---- non-finite-attention ----------------------------------------------------------------

NAN_HEAD = [GOOD[0], GOOD[1], GOOD[2].copy()]
NAN_HEAD[2][7, 2] = np.nan  # last BOS row, first text token: a value 0.1.7 uses


def test_non_finite_reference_proceeds(oracle):
    analyzer = step_torch(oracle, (2, 6), NAN_HEAD, 4, 0)
    assert analyzer.curr_frame_pos == 1 and torch.isnan(analyzer.alignment).any()


@pytest.mark.parametrize("cls", OURS)
def test_non_finite_ours_raises(cls):
    inputs = TraceInputs((2, 6), 0, "float32", [np.stack(NAN_HEAD)], [np.zeros((1, 4), np.float32)], [None])
    (outcome,) = run_trace(inputs, cls)
    assert outcome.error == "AnalyzerInputError[non-finite]"
    assert "layer 9 head 2" in outcome.error_message and outcome.state["curr_frame_pos"] == 0
    # Non-finite logits are not an error: they pass through as in 0.1.7.
    logits = np.array([[np.nan, np.inf, -np.inf, 1.0]], np.float32)
    inputs = TraceInputs((2, 6), 3, "float32", [np.stack(GOOD)], [logits], [None])
    (outcome,) = run_trace(inputs, cls)
    np.testing.assert_array_equal(outcome.logits, logits)


# ---- records -----------------------------------------------------------------------------


def test_records_reference_has_none(oracle):
    analyzer = step_torch(oracle, (2, 6), GOOD, 4, 0)
    assert not hasattr(analyzer, "results") and not hasattr(analyzer, "margins")
    assert isinstance(analyzer.text_position, torch.Tensor)


@pytest.mark.parametrize("cls", OURS)
def test_records_ours_match_decisions(cls):
    outcomes = list(run_trace(fixture_inputs("discontinuity_forward"), cls))
    for o in outcomes:
        assert o.result["complete"] == o.state["complete"] and o.result["position"] == o.state["text_position"]
        assert o.result["discontinuity"] == (not -4 < o.margins["position_jump"] < 7)
    assert any(o.result["discontinuity"] for o in outcomes)
    analyzer = cls(text_tokens_slice=(2, 6))
    analyzer.last_aligned_attns = GOOD if cls is MlxPort else [torch.from_numpy(g) for g in GOOD]
    analyzer.step(mx.zeros((1, 4)) if cls is MlxPort else torch.zeros(1, 4))
    assert type(analyzer.text_position) is int and len(analyzer.results) == len(analyzer.margins) == 1


# ---- mlx-logits-not-mutated --------------------------------------------------------------

SUPPRESSING = [np.random.default_rng(1).random((12, 12), dtype=np.float32) for _ in range(3)]


@pytest.mark.parametrize("who", ["0.1.7", "torch_ref"])
def test_in_place_reference_mutates(oracle, who):
    analyzer = (oracle if who == "0.1.7" else Reference)(text_tokens_slice=(0, 10), eos_idx=2)
    analyzer.last_aligned_attns = [torch.from_numpy(a) for a in SUPPRESSING]
    logits = torch.zeros(1, 4)
    out = analyzer.step(logits)
    assert logits[0, 2] == -(2**15) and out is logits


def test_in_place_mlx_port_does_not():
    analyzer = MlxPort(text_tokens_slice=(0, 10), eos_idx=2)
    analyzer.last_aligned_attns = SUPPRESSING
    logits = mx.zeros((1, 4))
    out = analyzer.step(logits)
    assert isinstance(out, mx.array) and out[0, 2].item() == -(2**15)
    assert mx.array_equal(logits, mx.zeros((1, 4))).item()


# ---- sum-order ---------------------------------------------------------------------------

# Attention values (all three heads alike) whose head means, the row maxima after
# completion, sum to exactly 5.0 in torch's float32 sum (not > 5) and to 5.0000005 (> 5) in
# float64 row order: found by searching through the real 0.1.7 step.
KNIFE_EDGE = [
    0.09965697675943375, 0.08969241380691528, 0.14847692847251892, 0.08286596834659576, 0.1423824578523636,
    0.3573928773403168, 0.22354625165462494, 0.1402420848608017, 0.11576363444328308, 0.35879114270210266,
    0.17752934992313385, 0.36891746520996094, 0.2029009461402893, 0.20491637289524078, 0.33897119760513306,
    0.28405529260635376, 0.2261604368686676, 0.17116229236125946, 0.3324170410633087, 0.16580426692962646,
    0.3483346402645111, 0.04333578050136566, 0.1723577231168747, 0.20432665944099426,
]
ROW_MAXIMA = torch.stack([torch.tensor(KNIFE_EDGE)] * 3).mean(dim=0)


def knife_edge_trace() -> TraceInputs:
    """S=6: read tokens 0..3 (complete at the fourth step), then attend token 0 with the values above."""
    attns = [np.zeros((3, 7, 7), np.float32)]
    attns[0][:, 6, 0] = 1
    for k, value in enumerate([1, 1, 1] + KNIFE_EDGE, start=1):
        row = np.zeros((3, 1, 7 + k), np.float32)
        row[:, 0, k if k <= 3 else 0] = value
        attns.append(row)
    n = len(attns)
    return TraceInputs((0, 6), 0, "float32", attns, [np.zeros((1, 3), np.float32)] * n, [None] * n)


def test_sum_order_reference_uses_float32_kernel_order(oracle):
    last = list(run_trace(knife_edge_trace(), oracle, catch=(Exception,)))[-1]
    torch_sum = ROW_MAXIMA.sum().item()  # 0.1.7's reduction, in this CPU's order
    if torch_sum > 5:
        pytest.skip(f"this CPU's torch sums the knife-edge values to {torch_sum}, agreeing with float64")
    assert torch_sum == 5.0 and last.logits[0, 0] != 2**15  # no repetition detected, EOS not forced


@pytest.mark.parametrize("cls", OURS)
def test_sum_order_ours_is_float64_row_order(cls):
    logging.disable(logging.WARNING)
    try:
        last = list(run_trace(knife_edge_trace(), cls))[-1]
    finally:
        logging.disable(logging.NOTSET)
    assert last.margins["repetition_mass"] == float(np.float32(sum(ROW_MAXIMA.tolist()))) > 5
    assert last.result["repetition"] and last.logits[0, 0] == 2**15
