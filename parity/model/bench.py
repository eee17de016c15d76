"""Decoding speed: what the analyzer and its attention capture cost, as ratios within one run.

    python -m parity bench [--config tiny|520m] [--steps N] [--repeats R] [--json PATH]

MLX: our loop with the inspectable attention and the analyzer, against the same loop on
mlx-audio's T3 as it ships (fused attention in every layer, no analyzer). PyTorch: our
three-layer eager capture against 0.1.7's whole-model eager switch, and against plain SDPA
without the analyzer. Every variant decodes the same teacher-forced tokens, so each does the
same number of steps; variants are interleaved and the median rate of each is reported.
Times are tokens/s of the decode steps after the first (prefill excluded). Compare ratios,
not rates: the machines here are shared and noisy. The 520m config uses random weights.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from typing import Callable

import numpy as np

from .config import T3Config
from .inference import GenerationSettings
from .tokenizer import CharTokenizer
from .voices import synthetic_voice

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away into the woods."
SHORT_TEXT = "Hello there, how are you today?"  # 520m on MLX's CPU backend: prefill takes minutes


def _decode_rate(run: Callable) -> float:
    stamps = []
    run(on_step=lambda i: stamps.append(time.perf_counter()))
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _models(config_name: str):
    from . import t3_mlx, t3_torch
    from .weights import load_model_weights, seeded_weights

    if config_name == "tiny":
        weights = load_model_weights()
        config, values = weights.config, weights.weights
    else:
        config = T3Config.llama_520m()
        values = seeded_weights(config, 1)
    return config, t3_torch.T3(config).load_numpy(values), t3_mlx.build_t3(config, values)


def run_benchmark(config_name: str = "tiny", steps: int = 100, repeats: int = 5, text: str = "", progress=print) -> dict:
    from . import inference_mlx, inference_torch

    config, torch_t3, mlx_t3 = _models(config_name)
    voice = synthetic_voice("bench", 1, config)
    text = text or (TEXT if config_name == "tiny" else SHORT_TEXT)
    text_tokens = CharTokenizer(config).encode(text) if config.text_vocab == 64 else _text_ids(config, text)
    speech = min(config.start_speech_token, config.stop_speech_token)
    forced = np.random.default_rng(0).integers(0, speech, steps).tolist()
    settings = GenerationSettings(max_new_tokens=steps)
    plain = dataclasses.replace(settings, analyzer=False)
    variants = {
        "mlx: inspectable attention + analyzer": lambda **k: inference_mlx.generate(mlx_t3, voice, text_tokens, settings, forced_tokens=forced, **k),
        "mlx: mlx-audio T3, fused attention, no analyzer": lambda **k: inference_mlx.generate(
            mlx_t3, voice, text_tokens, plain, forced_tokens=forced, attention_class=None, **k),
        "torch: layers 9/12/13 eager + analyzer": lambda **k: inference_torch.generate(torch_t3, voice, text_tokens, settings, forced_tokens=forced, **k),
        "torch: whole model eager + analyzer (0.1.7)": lambda **k: inference_torch.generate(
            torch_t3, voice, text_tokens, settings, forced_tokens=forced, whole_model_eager=True, **k),
        "torch: SDPA, no analyzer": lambda **k: inference_torch.generate(torch_t3, voice, text_tokens, plain, forced_tokens=forced, **k),
    }
    rates = {name: [] for name in variants}
    for run in variants.values():  # warm-up: kernels, caches, allocator
        _decode_rate(run)
    for r in range(repeats):
        for name, run in variants.items():
            rates[name].append(_decode_rate(run))
        progress(f"round {r + 1}/{repeats}: " + ", ".join(f"{n.split(':')[0]} {rates[n][-1]:.1f}" for n in variants))
    median = {name: statistics.median(values) for name, values in rates.items()}
    names = list(variants)
    return {
        "config": config_name, "steps": steps, "repeats": repeats, "text_tokens": len(text_tokens),
        "tokens_per_s": median, "all_rates": rates,
        "ratios": {
            "mlx_ours_over_plain": median[names[0]] / median[names[1]],
            "torch_three_layer_over_whole_model_eager": median[names[2]] / median[names[3]],
            "torch_ours_over_plain_sdpa": median[names[2]] / median[names[4]],
        },
    }


def _text_ids(config: T3Config, text: str) -> list[int]:
    """Stand-in text tokens, one per character, for the real vocabulary (its BPE tokenizer is
    not available here)."""
    rng = np.random.default_rng(0)
    body = rng.integers(1, config.text_vocab - 1, len(text)).tolist()
    return [config.start_text_token, *[t if t != config.start_text_token else 1 for t in body], config.stop_text_token]


def format_report(report: dict) -> str:
    lines = [f"decode speed, {report['config']} config, {report['text_tokens']} text tokens, {report['steps']} teacher-forced steps, "
             f"median of {report['repeats']} interleaved rounds (tokens/s, prefill excluded)"]
    width = max(len(name) for name in report["tokens_per_s"])
    lines += [f"  {name:<{width}}  {rate:8.1f}" for name, rate in report["tokens_per_s"].items()]
    r = report["ratios"]
    lines += [
        f"  MLX ours / plain mlx-audio:                 {r['mlx_ours_over_plain']:.3f}  (target >= 0.95; seed spec 0.85-0.90)",
        f"  torch three-layer eager / whole-model eager: {r['torch_three_layer_over_whole_model_eager']:.3f}",
        f"  torch ours / plain SDPA without analyzer:    {r['torch_ours_over_plain_sdpa']:.3f}",
    ]
    return "\n".join(lines)


def main(args) -> int:
    report = run_benchmark(args.config, args.steps, args.repeats, args.text or "")
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0
