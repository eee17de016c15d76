"""Chatterbox's T3 in PyTorch, on `transformers.LlamaModel`, with upstream's parameter names
(so upstream checkpoints and our safetensors load as they are) and its prompt layout:
[cond | text | BOS | BOS], batch of two for classifier-free guidance.

The modules mirror chatterbox-tts 0.1.7's T3, T3CondEnc, Perceiver and
LearnedPositionEmbeddings; the inference loop is in `loop_torch.py`.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaModel

from ..analyzer.common import LLAMA_ALIGNED_HEADS
from .config import T3Config
from .voices import Voice


class LearnedPositionEmbeddings(nn.Module):
    def __init__(self, length: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(length, dim)

    def forward(self, tokens):
        """Embeddings of positions 0 .. tokens.shape[1] - 1."""
        return self.emb(torch.arange(tokens.shape[1], device=tokens.device))

    def at(self, position: int):
        """(1, 1, dim): the embedding of one position."""
        return self.emb(torch.tensor([[position]], device=self.emb.weight.device))


class PerceiverAttention(nn.Module):
    """Upstream's AttentionBlock2: pre-norm attention of x1 over x2, residual on x1."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def _split(self, x):
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x1, x2):
        q = self._split(self.to_q(self.norm(x1)))
        k, v = self._split(self.to_k(self.norm(x2))), self._split(self.to_v(self.norm(x2)))
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x1.shape)
        return x1 + self.proj_out(h)


class Perceiver(nn.Module):
    """Resamples the prompt speech embeddings to a fixed number of query tokens."""

    def __init__(self, queries: int, dim: int, heads: int):
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.zeros(1, queries, dim))
        self.attn = PerceiverAttention(dim, heads)

    def forward(self, h):
        query = self.pre_attention_query.expand(h.shape[0], -1, -1)
        attended = self.attn(query, h)  # cross-attention to the prompt
        return self.attn(attended, attended)  # then self-attention, same weights (as upstream)


class CondEncoder(nn.Module):
    """Upstream's T3CondEnc: [speaker | perceiver(prompt) | emotion] conditioning positions."""

    def __init__(self, config: T3Config):
        super().__init__()
        self.speaker_embed_size = config.speaker_embed_size
        self.spkr_enc = nn.Linear(config.speaker_embed_size, config.hidden_size)
        self.emotion_adv_fc = nn.Linear(1, config.hidden_size, bias=False)
        self.perceiver = Perceiver(config.perceiver_queries, config.hidden_size, config.perceiver_heads)

    def forward(self, speaker_emb, prompt_emb, exaggeration):
        speaker = self.spkr_enc(speaker_emb.view(-1, self.speaker_embed_size))[:, None]
        emotion = self.emotion_adv_fc(exaggeration.view(-1, 1, 1))
        return torch.cat((speaker, self.perceiver(prompt_emb), emotion), dim=1)


class T3(nn.Module):
    def __init__(self, config: T3Config):
        super().__init__()
        self.config = config
        llama = LlamaConfig(**config.llama_kwargs(), attn_implementation="sdpa")
        self.tfmr = LlamaModel(llama)
        self.cond_enc = CondEncoder(config)
        self.text_emb = nn.Embedding(config.text_vocab, config.hidden_size)
        self.speech_emb = nn.Embedding(config.speech_vocab, config.hidden_size)
        self.text_pos_emb = LearnedPositionEmbeddings(config.max_text_tokens + 2, config.hidden_size)
        self.speech_pos_emb = LearnedPositionEmbeddings(config.max_speech_tokens + 2 + 2, config.hidden_size)
        self.text_head = nn.Linear(config.hidden_size, config.text_vocab, bias=False)
        self.speech_head = nn.Linear(config.hidden_size, config.speech_vocab, bias=False)
        self.eval()

    def load_numpy(self, weights: dict[str, np.ndarray]) -> "T3":
        self.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
        return self

    def conditioning(self, voice: Voice):
        """(1, cond_len, dim): upstream's prepare_conditioning for one voice."""
        prompt = torch.from_numpy(voice.prompt_tokens.astype(np.int64))[None]
        prompt_emb = self.speech_emb(prompt) + self.speech_pos_emb(prompt)
        exaggeration = torch.tensor([[[voice.exaggeration]]], dtype=torch.float32)
        return self.cond_enc(torch.from_numpy(voice.speaker_emb)[None], prompt_emb, exaggeration)

    def prompt(self, voice: Voice, text_tokens: list[int]):
        """(2, T0, dim) embeddings of [cond | text | BOS | BOS] for the conditional row and the
        unconditional one (text embeddings zeroed, as upstream's CFG), and the cond length."""
        cond = self.conditioning(voice).expand(2, -1, -1)
        text = torch.tensor([text_tokens, text_tokens])
        text_emb = self.text_emb(text)
        text_emb[1].zero_()
        text_emb = text_emb + self.text_pos_emb(text)
        # Upstream's initial speech token and the BOS its loop appends are one embedding: BOS at position 0.
        bos = self.speech_embedding(self.config.start_speech_token, 0)
        return torch.cat((cond, text_emb, bos, bos), dim=1), cond.shape[1]

    def speech_embedding(self, token: int, position: int):
        """(2, 1, dim): a sampled token's input at speech position `position`, for both CFG rows."""
        emb = self.speech_emb(torch.tensor([[token]])) + self.speech_pos_emb.at(position)
        return emb.expand(2, -1, -1)


@contextmanager
def eager_aligned_layers(tfmr: LlamaModel, layers=tuple(sorted({layer for layer, _ in LLAMA_ALIGNED_HEADS}))):
    """Only `layers` run eager attention (so their weights can be read); every other layer
    keeps SDPA. transformers builds one mask per forward from the model config, and an eager
    layer needs the explicit causal mask, so the model config goes eager and the other layers
    get an SDPA copy of it. Everything is restored on exit, exceptions included."""
    config = tfmr.config
    saved_impl = config._attn_implementation
    saved = [layer.self_attn.config for layer in tfmr.layers]
    fast = copy.deepcopy(config)
    fast._attn_implementation = "sdpa"
    try:
        config._attn_implementation = "eager"
        for index, layer in enumerate(tfmr.layers):
            if index not in layers:
                layer.self_attn.config = fast
        yield tfmr
    finally:
        for layer, layer_config in zip(tfmr.layers, saved):
            layer.self_attn.config = layer_config
        config._attn_implementation = saved_impl
