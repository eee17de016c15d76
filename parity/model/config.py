"""One T3 configuration for both frameworks.

Upstream Chatterbox builds T3 from a `T3Config` plus a named Llama config dict, in PyTorch
(transformers) and in mlx-audio alike. `T3Config` here holds every size both need and
renders each framework's form, so a model built in one loads in the other from one
safetensors file. `T3Config.tiny()` is the embedded test model: the real architecture
(llama3 RoPE scaling, learned positions, speaker/perceiver/emotion conditioning, CFG) at a
size that runs in milliseconds; `T3Config.llama_520m()` is the real one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


def _llama3_rope_scaling() -> dict:
    return {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    }


@dataclass(frozen=True)
class T3Config:
    name: str
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    text_vocab: int
    start_text_token: int
    stop_text_token: int
    speech_vocab: int
    start_speech_token: int
    stop_speech_token: int
    max_text_tokens: int = 2048
    max_speech_tokens: int = 4096
    speaker_embed_size: int = 256
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    speech_cond_prompt_len: int = 150
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: dict = field(default_factory=_llama3_rope_scaling)

    @classmethod
    def tiny(cls) -> "T3Config":
        """14 layers x 16 heads (so LLAMA_ALIGNED_HEADS exist), hidden 128, small vocabularies,
        upstream's maximum lengths (room for a 250-word passage)."""
        return cls(
            name="chatterbox_parity_tiny", hidden_size=128, num_layers=14, num_heads=16, intermediate_size=256,
            text_vocab=64, start_text_token=63, stop_text_token=0,
            speech_vocab=264, start_speech_token=256, stop_speech_token=257,
        )

    @classmethod
    def llama_520m(cls) -> "T3Config":
        """Chatterbox's English T3 (Llama 520M)."""
        return cls(
            name="chatterbox_parity_llama_520m", hidden_size=1024, num_layers=30, num_heads=16, intermediate_size=4096,
            text_vocab=704, start_text_token=255, stop_text_token=0,
            speech_vocab=8194, start_speech_token=6561, stop_speech_token=6562,
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def cond_len(self) -> int:
        """Conditioning positions: speaker embedding, perceiver queries, emotion."""
        return 1 + self.perceiver_queries + 1

    def llama_kwargs(self) -> dict:
        """The backbone's Llama config, as upstream's LLAMA_CONFIGS entries spell it."""
        return {
            "vocab_size": 8,  # unused: T3 feeds embeddings; kept tiny as upstream does
            "max_position_embeddings": 131072,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": dict(self.rope_scaling),
            "attention_bias": False,
            "mlp_bias": False,
            "hidden_act": "silu",
        }

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "T3Config":
        return cls(**data)
