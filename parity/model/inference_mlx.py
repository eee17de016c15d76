"""T3 inference in MLX: the same loop as `inference_torch`, stage for stage, on mlx-audio's
T3 with the inspectable attention in the aligned layers and the MLX analyzer port.

mlx-audio's own `T3.inference` has no analyzer and samples differently (top-p before min-p,
on unnormalised logits); this loop applies the processors as upstream's PyTorch loop does.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import mlx.core as mx
import numpy as np

from ..analyzer.mlx_port import AlignmentStreamAnalyzer
from .inference import Generation, GenerationSettings, TokenChooser, step_record
from .processors import process
from .t3_mlx import AttentionCapture, InspectableAttention, inspectable_attention, prompt, speech_embedding
from .voices import Voice


def _numpy(a) -> np.ndarray:
    return np.array(a.astype(mx.float32))


def _native_sample(processed) -> int:
    return int(mx.random.categorical(processed).reshape(-1)[0].item())


def generate(t3, voice: Voice, text_tokens: list[int], settings: GenerationSettings = GenerationSettings(),
             *, forced_tokens: Optional[list[int]] = None, record: bool = False, on_step=None,
             attention_class=InspectableAttention, processors=process, analyzer_class=AlignmentStreamAnalyzer) -> Generation:
    """Speech tokens for `text_tokens` in `voice`; with `record`, every stage of every step.
    `attention_class`, `processors` and `analyzer_class` are seams for tests (known-bad
    variants); `attention_class=None` keeps mlx-audio's fused attention everywhere (plain
    decoding, for benchmarks: it needs `settings.analyzer` off)."""
    from mlx_audio.lm.models.cache import make_prompt_cache

    if attention_class is None and settings.analyzer:
        raise ValueError("the analyzer needs the inspectable attention (attention_class)")
    hp = t3.hp
    choose = TokenChooser(settings, _native_sample, forced_tokens)
    swap = inspectable_attention(t3, attention_class) if attention_class else nullcontext(AttentionCapture())
    with swap as capture:
        embeds, cond_len = prompt(t3, voice, text_tokens)
        text_slice = (cond_len, cond_len + len(text_tokens))
        analyzer = analyzer_class(text_tokens_slice=text_slice, eos_idx=hp.stop_speech_token) if settings.analyzer else None
        cache = make_prompt_cache(t3.tfmr)
        hidden = t3.tfmr.model(None, input_embeddings=embeds, cache=cache)
        generated = [hp.start_speech_token]
        result = Generation(tokens=[], text_tokens_slice=text_slice)
        for i in range(settings.max_new_tokens):
            raw = t3.speech_head(hidden[:, -1, :])
            cond, uncond = raw[0:1], raw[1:2]
            cfg = cond + settings.cfg_weight * (cond - uncond)
            analyzed = cfg
            if analyzer is not None:
                analyzer.last_aligned_attns = list(capture.matrices)
                analyzed = analyzer.step(cfg, next_token=generated[-1])
            processed = processors(analyzed, generated, settings.processors)
            mx.eval(processed)
            token, u = choose(i, processed)
            if record:
                attns = np.stack([_numpy(m) for m in capture.matrices]) if analyzer is not None else None
                result.steps.append(step_record(analyzer, _numpy, attns, raw, cfg, analyzed, processed,
                                                generated[-1], u, token))
            generated.append(token)
            result.tokens.append(token)
            if on_step is not None:
                on_step(i)
            if token == hp.stop_speech_token:
                break
            hidden = t3.tfmr.model(None, input_embeddings=speech_embedding(t3, token, i + 1), cache=cache)
        if analyzer is not None:
            result.alignment = _numpy(analyzer.alignment)
        return result
