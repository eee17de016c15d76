"""T3 inference in PyTorch, upstream chatterbox-tts 0.1.7's loop with our reference analyzer.

The analyzer is created per inference, hooks only the aligned layers (which alone run
eager attention), and is cleaned up in `finally`: an exception at any step leaves no hook
and no changed config behind.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import numpy as np
import torch

from ..analyzer.torch_ref import AlignmentStreamAnalyzer
from .inference import Generation, GenerationSettings, TokenChooser, step_record
from .processors import process_torch
from .t3_torch import T3, eager_aligned_layers
from .voices import Voice


def _numpy(t) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().copy()


def _native_sample(processed) -> int:
    return int(torch.multinomial(torch.softmax(processed, dim=-1), num_samples=1).view(-1)[0])


def generate(model: T3, voice: Voice, text_tokens: list[int], settings: GenerationSettings = GenerationSettings(),
             *, forced_tokens: Optional[list[int]] = None, record: bool = False, on_step=None,
             whole_model_eager: bool = False) -> Generation:
    """Speech tokens for `text_tokens` in `voice`; with `record`, every stage of every step.
    `on_step(i)` is called after each step (progress bars, fault injection in tests).
    `whole_model_eager` captures attention as 0.1.7 does, switching every layer to eager
    (for benchmarks); by default only the aligned layers run eager."""
    config = model.config
    choose = TokenChooser(settings, _native_sample, forced_tokens)
    aligned_only = settings.analyzer and not whole_model_eager
    with torch.inference_mode(), (eager_aligned_layers(model.tfmr) if aligned_only else nullcontext()):
        embeds, cond_len = model.prompt(voice, text_tokens)
        text_slice = (cond_len, cond_len + len(text_tokens))
        analyzer = (AlignmentStreamAnalyzer(model.tfmr, None, text_tokens_slice=text_slice,
                                            eos_idx=config.stop_speech_token, eager_attention=whole_model_eager)
                    if settings.analyzer else None)
        try:
            output = model.tfmr(inputs_embeds=embeds, use_cache=True)
            generated = [config.start_speech_token]
            result = Generation(tokens=[], text_tokens_slice=text_slice)
            for i in range(settings.max_new_tokens):
                raw = model.speech_head(output.last_hidden_state[:, -1, :])
                cond, uncond = raw[0:1], raw[1:2]
                cfg = cond + torch.as_tensor(settings.cfg_weight, dtype=cond.dtype) * (cond - uncond)
                analyzed, attns = cfg.clone(), None
                if analyzer is not None:
                    attns = np.stack([_numpy(a) for a in analyzer.last_aligned_attns]) if record else None
                    analyzed = analyzer.step(analyzed, next_token=generated[-1])
                processed = process_torch(analyzed, torch.tensor([generated]), settings.processors)
                token, u = choose(i, processed)
                if record:
                    result.steps.append(step_record(analyzer, _numpy, attns, raw, cfg, analyzed, processed,
                                                    generated[-1], u, token))
                generated.append(token)
                result.tokens.append(token)
                if on_step is not None:
                    on_step(i)
                if token == config.stop_speech_token:
                    break
                output = model.tfmr(inputs_embeds=model.speech_embedding(token, i + 1),
                                    past_key_values=output.past_key_values, use_cache=True)
            if analyzer is not None:
                result.alignment = _numpy(analyzer.alignment)
            return result
        finally:
            if analyzer is not None:
                analyzer.cleanup()
