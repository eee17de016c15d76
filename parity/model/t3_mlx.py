"""Chatterbox's T3 in MLX: mlx-audio's own T3, built from our `T3Config` and loaded from the
same safetensors as the PyTorch model (through mlx-audio's `T3.sanitize`).

mlx-audio's attention uses the fused `mx.fast.scaled_dot_product_attention`, which exposes
no weights. `inspectable_attention` swaps an explicit-softmax attention into the aligned
layers only (9, 12, 13), capturing the aligned head of batch row 0 (the CFG conditional
row) at every forward; every other layer keeps the fused kernel. The swap is undone on
exit, exceptions included.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..analyzer.common import LLAMA_ALIGNED_HEADS
from .config import T3Config
from .voices import Voice

_MLX_LLAMA_KEYS = (
    "vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "rope_scaling",
    "attention_bias", "mlp_bias",
)


def build_t3(config: T3Config, weights: dict[str, np.ndarray]):
    """mlx-audio's T3 for `config`, loaded strictly from upstream-named `weights`."""
    from mlx_audio.tts.models.chatterbox import config as chatterbox_config
    from mlx_audio.tts.models.chatterbox.t3 import T3, Perceiver

    llama = {key: value for key, value in config.llama_kwargs().items() if key in _MLX_LLAMA_KEYS}
    # mlx-audio looks the backbone up by name; tied embeddings: upstream has no lm_head.
    chatterbox_config.LLAMA_CONFIGS[config.name] = {**llama, "model_type": "llama", "tie_word_embeddings": True}
    hp = chatterbox_config.T3Config(
        text_tokens_dict_size=config.text_vocab, start_text_token=config.start_text_token,
        stop_text_token=config.stop_text_token, max_text_tokens=config.max_text_tokens,
        speech_tokens_dict_size=config.speech_vocab, start_speech_token=config.start_speech_token,
        stop_speech_token=config.stop_speech_token, max_speech_tokens=config.max_speech_tokens,
        llama_config_name=config.name, speaker_embed_size=config.speaker_embed_size,
        speech_cond_prompt_len=config.speech_cond_prompt_len,
    )
    t3 = T3(hp)
    # mlx-audio (like upstream) builds the perceiver at the 520M width; size it to the model.
    t3.cond_enc.perceiver = Perceiver(config.perceiver_queries, config.hidden_size, config.hidden_size, config.perceiver_heads)
    arrays = {name: mx.array(value) for name, value in weights.items()}
    t3.load_weights(list(t3.sanitize(arrays).items()), strict=True)
    mx.eval(t3.parameters())
    return t3


def prompt(t3, voice: Voice, text_tokens: list[int]):
    """(2, T0, dim) embeddings of [cond | text | BOS | BOS] (row 1 unconditional) and the cond length."""
    from mlx_audio.tts.models.chatterbox.t3 import T3Cond

    cond = T3Cond(
        speaker_emb=mx.array(voice.speaker_emb)[None],
        cond_prompt_speech_tokens=mx.array(voice.prompt_tokens)[None],
        emotion_adv=mx.array([[[voice.exaggeration]]], dtype=mx.float32),
    )
    text = mx.array([text_tokens, text_tokens])
    bos = mx.full((2, 1), t3.hp.start_speech_token, dtype=mx.int32)
    embeds, cond_len = t3.prepare_input_embeds(t3_cond=cond, text_tokens=text, speech_tokens=bos, cfg_weight=1.0)
    second_bos = t3.speech_emb(bos[:1]) + t3.speech_pos_emb.get_fixed_embedding(0)
    return mx.concatenate([embeds, mx.broadcast_to(second_bos, (2, 1, embeds.shape[-1]))], axis=1), cond_len


def speech_embedding(t3, token: int, position: int):
    emb = t3.speech_emb(mx.array([[token]])) + t3.speech_pos_emb.get_fixed_embedding(position)
    return mx.broadcast_to(emb, (2, 1, emb.shape[-1]))


class AttentionCapture:
    """Where the inspectable layers leave their head matrices, in LLAMA_ALIGNED_HEADS order."""

    def __init__(self):
        self.matrices: list[Optional[mx.array]] = [None] * len(LLAMA_ALIGNED_HEADS)


def causal_mask(queries: int, keys: int) -> mx.array:
    """Boolean (queries, keys) mask, bottom-right aligned: query i sees keys <= i + keys - queries."""
    rows = mx.arange(keys - queries, keys)[:, None]
    return rows >= mx.arange(keys)[None]


class InspectableAttention(nn.Module):
    """mlx-audio's Llama attention with the softmax written out, keeping one head's weights.

    It reuses the original module's projections and RoPE under the same names, so the
    parameter tree (and weight loading) is unchanged while it is in place."""

    def __init__(self, original, capture: AttentionCapture, slot: int, head: int, batch_row: int = 0):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = original.q_proj, original.k_proj, original.v_proj, original.o_proj
        self.rope = original.rope
        self.n_heads, self.n_kv_heads, self.scale = original.n_heads, original.n_kv_heads, original.scale
        self._capture, self._slot, self._head, self._batch_row = capture, slot, head, batch_row

    def _mask(self, mask, queries: int, keys: int):
        if isinstance(mask, str):  # mlx-audio passes "causal" for the first (multi-token) pass
            return causal_mask(queries, keys)
        return mask

    def __call__(self, x, mask=None, cache=None):
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        q, k = self.rope(q, offset=offset), self.rope(k, offset=offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        if self.n_kv_heads != self.n_heads:
            k, v = (mx.repeat(t, self.n_heads // self.n_kv_heads, axis=1) for t in (k, v))
        scores = (q * self.scale) @ k.transpose(0, 1, 3, 2)
        mask = self._mask(mask, L, k.shape[2])
        if mask is not None:
            scores = mx.where(mask, scores, -mx.inf) if mask.dtype == mx.bool_ else scores + mask
        weights = mx.softmax(scores.astype(mx.float32), axis=-1, precise=True)
        self._capture.matrices[self._slot] = weights[self._batch_row, self._head]
        out = (weights.astype(v.dtype) @ v).transpose(0, 2, 1, 3).reshape(B, L, -1)
        return self.o_proj(out)


@contextmanager
def inspectable_attention(t3, attention_class=InspectableAttention):
    """Swap the aligned layers' attention for `attention_class`; yields the AttentionCapture."""
    capture = AttentionCapture()
    layers = t3.tfmr.model.layers
    originals = {}
    try:
        for slot, (layer, head) in enumerate(LLAMA_ALIGNED_HEADS):
            originals[layer] = layers[layer].self_attn
            layers[layer].self_attn = attention_class(originals[layer], capture, slot, head)
        yield capture
    finally:
        for layer, module in originals.items():
            layers[layer].self_attn = module
