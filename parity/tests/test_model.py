"""Model-level parity: the MLX T3 (mlx-audio's, with inspectable attention and the MLX
analyzer) against PyTorch recordings of the tiny T3, stage by stage."""

import copy
import dataclasses
import logging

import mlx.core as mx
import numpy as np
import pytest
import torch

from parity.model import inference_mlx, inference_torch, t3_mlx, t3_torch
from parity.model.compare import KLReport, first_divergence
from parity.model.inference import GenerationSettings
from parity.model.processors import process
from parity.model.record import CASES, record_case
from parity.model.tokenizer import CharTokenizer
from parity.fixtures import fixture_names
from parity.model.trace import MODEL_TRACES_DIR, load_model_trace
from parity.model.voices import load_voice
from parity.model.weights import load_model_weights
from parity.replay import replay_trace

NAMES = fixture_names(MODEL_TRACES_DIR)  # committed cases and any trace recorded with `python -m parity record`


@pytest.fixture(autouse=True)
def quiet_forced_eos():
    logging.disable(logging.WARNING)  # forced EOS is routine for a random test model
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture(scope="session")
def weights():
    return load_model_weights()


@pytest.fixture(scope="session")
def mlx_t3(weights):
    return t3_mlx.build_t3(weights.config, weights.weights)


@pytest.fixture(scope="session")
def torch_t3(weights):
    return t3_torch.T3(weights.config).load_numpy(weights.weights)


@pytest.fixture(scope="session")
def kl_report(request):
    report = KLReport()
    request.config.parity_kl_report = report  # printed in the terminal summary (conftest.py)
    return report


def inputs(trace, weights):
    return load_voice(trace.voice), trace.text_tokens, trace.generation_settings()


def assert_no_divergence(divergence):
    if divergence:
        pytest.fail(str(divergence), pytrace=False)


@pytest.mark.parametrize("name", NAMES)
def test_analyzer_replays_model_trace(name, port_class, port_arrays):
    divergence = replay_trace(load_model_trace(name).analyzer, port_class, port_arrays)
    assert_no_divergence(divergence)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_forced_mlx_matches_recording(name, weights, mlx_t3, kl_report):
    trace = load_model_trace(name)
    voice, text_tokens, settings = inputs(trace, weights)
    run = inference_mlx.generate(mlx_t3, voice, text_tokens, settings, forced_tokens=trace.tokens, record=True)
    assert_no_divergence(first_divergence(trace, run.steps))
    report = KLReport()
    for k, step in enumerate(run.steps):
        report.add(trace.analyzer.logits_in[k], step.logits_cfg)
        kl_report.add(trace.analyzer.logits_in[k], step.logits_cfg)
    assert max(report.kl) < 1e-8 and all(report.top1_same), str(report)


@pytest.mark.parametrize("name", NAMES)
def test_free_running_mlx_reproduces_recording(name, weights, mlx_t3):
    trace = load_model_trace(name)
    voice, text_tokens, settings = inputs(trace, weights)
    run = inference_mlx.generate(mlx_t3, voice, text_tokens, settings, record=True)
    assert_no_divergence(first_divergence(trace, run.steps))
    assert run.tokens == trace.tokens


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_model_trace_is_what_pytorch_records_today(case):
    """Stale recordings (model, voices, loop or reference changed) fail here: --update-golden."""
    trace = load_model_trace(case.name)
    fresh = record_case(case)
    assert fresh.tokens == trace.tokens
    assert_no_divergence(first_divergence(trace, [fresh.step(k) for k in range(len(fresh))]))


def _nudge(field, index, delta):
    def edit(step):
        getattr(step, field)[index] += delta

    return edit


@pytest.mark.parametrize(
    "stage, edit",
    [
        ("attention", _nudge("attns", (0, -1, 3), 2e-5)),
        ("logits", _nudge("logits_raw", (1, 7), 2e-4)),
        ("cfg", _nudge("logits_cfg", (0, 7), 2e-4)),
        ("analyzer", lambda step: step.state.update(text_position=step.state["text_position"] + 1)),
        ("analyzer", lambda step: step.margins.update(eos_forced=not step.margins["eos_forced"])),
        ("processors", _nudge("logits_processed", (0, int(np.argmax(load_model_trace("short_hi").logits_processed[3]))), -np.inf)),
        ("sampling", lambda step: setattr(step, "token", step.token + 1)),
    ],
)
def test_first_divergence_names_the_stage(stage, edit):
    trace = load_model_trace("short_hi")
    steps = [trace.step(k) for k in range(len(trace))]
    steps[3] = copy.deepcopy(steps[3])
    edit(steps[3])
    divergence = first_divergence(trace, steps)
    assert (divergence.step, divergence.stage) == (3, stage), str(divergence)
    assert f"at step 3, stage {stage}" in str(divergence)
    intact = [trace.step(k) for k in range(len(trace))]
    assert first_divergence(trace, intact) is None
    assert first_divergence(trace, intact[:-1]).stage == "sampling"  # a run that stops early


# ---- known-bad canaries: each must make the comparison fail, at the stage it breaks ----------


class WrongBatchRow(t3_mlx.InspectableAttention):
    """Captures the unconditional CFG row."""

    def __init__(self, original, capture, slot, head):
        super().__init__(original, capture, slot, head, batch_row=1)


class NoCausalMaskOnFirstPass(t3_mlx.InspectableAttention):
    """Ignores mlx-audio's "causal" mask string, so the prompt attends to the future."""

    def _mask(self, mask, queries, keys):
        return None if isinstance(mask, str) else mask


def min_p_before_temperature(logits, token_ids, settings):
    return process(logits, token_ids, settings, order=("repetition_penalty", "min_p", "temperature", "top_p"))


@pytest.mark.parametrize(
    "seam, expected_stage",
    [
        ({"attention_class": WrongBatchRow}, "attention"),
        ({"attention_class": NoCausalMaskOnFirstPass}, "attention"),
        ({"processors": min_p_before_temperature}, "processors"),
    ],
    ids=["wrong-batch-row", "no-causal-mask-first-pass", "processors-reordered"],
)
def test_model_comparison_rejects_canary(seam, expected_stage, weights, mlx_t3):
    trace = load_model_trace("medium_fox_samantha")
    voice, text_tokens, settings = inputs(trace, weights)
    steps = 30
    run = inference_mlx.generate(mlx_t3, voice, text_tokens, dataclasses.replace(settings, max_new_tokens=steps),
                                 forced_tokens=trace.tokens[:steps], record=True, **seam)
    divergence = first_divergence(trace, run.steps, partial=True)
    assert divergence is not None and divergence.stage == expected_stage, str(divergence)


# ---- what inference leaves behind --------------------------------------------------------

ALIGNED_LAYERS = {9, 12, 13}


class Injected(RuntimeError):
    pass


def fail_at(step):
    def on_step(i):
        if i == step:
            raise Injected(f"injected at step {i}")

    return on_step


def torch_wiring(model):
    tfmr = model.tfmr
    hooks = sum(len(layer.self_attn._forward_hooks) for layer in tfmr.layers)
    configs = [layer.self_attn.config is tfmr.config for layer in tfmr.layers]
    return hooks, all(configs), tfmr.config._attn_implementation, tfmr.config.output_attentions


def test_torch_inference_uses_three_eager_layers_and_restores_after_an_exception(torch_t3, weights):
    before = torch_wiring(torch_t3)
    seen = {}

    def inspect(i):
        layers = torch_t3.tfmr.layers
        seen["eager"] = {k for k, layer in enumerate(layers) if layer.self_attn.config._attn_implementation == "eager"}
        seen["hooks"] = sum(len(layer.self_attn._forward_hooks) for layer in layers)
        fail_at(3)(i)

    with pytest.raises(Injected):
        inference_torch.generate(torch_t3, load_voice("samantha"), CharTokenizer(weights.config).encode("Hello."),
                                 GenerationSettings(seed=1), on_step=inspect)
    assert seen == {"eager": ALIGNED_LAYERS, "hooks": 3}
    assert torch_wiring(torch_t3) == before == (0, True, "sdpa", False)


def test_mlx_inference_swaps_three_layers_and_restores_after_an_exception(mlx_t3, weights):
    layers = mlx_t3.tfmr.model.layers
    before = [layer.self_attn for layer in layers]
    seen = {}

    def inspect(i):
        seen["inspectable"] = {k for k, layer in enumerate(layers) if isinstance(layer.self_attn, t3_mlx.InspectableAttention)}
        fail_at(3)(i)

    with pytest.raises(Injected):
        inference_mlx.generate(mlx_t3, load_voice("samantha"), CharTokenizer(weights.config).encode("Hello."),
                               GenerationSettings(seed=1), on_step=inspect)
    assert seen == {"inspectable": ALIGNED_LAYERS}
    assert all(now is then for now, then in zip((layer.self_attn for layer in layers), before))


def test_native_samplers_run(torch_t3, mlx_t3, weights):
    tokens = CharTokenizer(weights.config).encode("Hello.")
    settings = GenerationSettings(sampler="native", max_new_tokens=5)
    torch.manual_seed(0)
    mx.random.seed(0)
    for generate, model in ((inference_torch.generate, torch_t3), (inference_mlx.generate, mlx_t3)):
        run = generate(model, load_voice("samantha"), tokens, settings)
        assert 1 <= len(run.tokens) <= 5 and all(0 <= t < weights.config.speech_vocab for t in run.tokens)
