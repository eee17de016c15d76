"""The embedded test model: seeded weights for a T3Config, one safetensors file for both
frameworks (fixtures/models/). Parameter names are upstream T3's state-dict names. Values
are exact in float16 and stored so; both frameworks load them as float32.

Weights come from numpy's seeded generator in parameter-name order, so they do not depend
on a framework's initialisers. Scales are chosen so a random model still attends sharply
and sometimes repeats itself: a test model whose attention is uniform would exercise none
of the analyzer's branches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fixtures import FIXTURES_DIR, FixtureError, library_versions, load_pair, write_index, write_pair
from .config import T3Config

MODELS_DIR = FIXTURES_DIR / "models"
MODEL_SCHEMA = "chatterbox-parity/t3-weights"
TINY_MODEL = "tiny_t3"
TINY_SEED = 5151


@dataclass
class ModelWeights:
    name: str
    config: T3Config
    weights: dict[str, np.ndarray]
    seed: int


def parameter_shapes(config: T3Config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of upstream T3's state dict for `config` (built once in PyTorch)."""
    from .t3_torch import T3

    return {name: tuple(p.shape) for name, p in T3(config).state_dict().items()}


# Token and position embedding tables (the backbone's unused embed_tokens among them).
EMBEDDING_TABLES = ("text_emb.weight", "speech_emb.weight", "pos_emb.emb.weight", "embed_tokens.weight")


def _init(rng, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
        return np.ones(shape)
    if name.endswith(".bias"):
        return rng.normal(0.0, 0.02, shape)
    if name.endswith("pre_attention_query"):
        bound = math.sqrt(3.0) * math.sqrt(2.0 / (2 * shape[1]))  # upstream's uniform init
        return rng.uniform(-bound, bound, shape)
    if name.endswith(EMBEDDING_TABLES):
        return rng.normal(0.0, 1.0, shape)
    fan_in = shape[-1]
    # Sharper attention than 1/sqrt(fan_in), but not so sharp that float32 rounding between
    # frameworks grows past 1e-5 in the aligned layers (measured: 2.5 gives 5e-5, 1.5 gives 3e-6).
    scale = 1.5 if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
    return rng.normal(0.0, scale / math.sqrt(fan_in), shape)


def seeded_weights(config: T3Config, seed: int) -> dict[str, np.ndarray]:
    """float32 weights whose values are exact in float16, so the file can store them at half
    the size (fixtures/ has a size budget); both frameworks compute in float32."""
    rng = np.random.default_rng(seed)
    shapes = sorted(parameter_shapes(config).items())
    return {name: _init(rng, name, shape).astype(np.float16).astype(np.float32) for name, shape in shapes}


def write_model(model: ModelWeights, directory: Path = MODELS_DIR) -> None:
    document = {
        "schema": MODEL_SCHEMA, "schema_version": 1, "name": model.name,
        "config": model.config.to_json(),
        "provenance": {"generator": "parity.model.weights:seeded_weights", "seed": model.seed,
                       "versions": library_versions()},
    }
    stored = {name: value.astype(np.float16) for name, value in model.weights.items()}
    if any(not np.array_equal(stored[name].astype(np.float32), value) for name, value in model.weights.items()):
        raise ValueError("weights must be exact in float16 to be stored as float16")
    write_pair(directory, model.name, document, stored)
    write_index(directory, sorted(p.stem for p in directory.glob("*.safetensors")))


def load_model_weights(name: str = TINY_MODEL, directory: Path = MODELS_DIR) -> ModelWeights:
    document, tensors, _, tensor_path = load_pair(name, directory, MODEL_SCHEMA)
    config = T3Config.from_json(document["config"])
    expected = parameter_shapes(config)
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise FixtureError(tensor_path, f"weights do not fit the config: missing {missing[:5]}, unexpected {extra[:5]}")
    for key, shape in expected.items():
        if tensors[key].shape != shape:
            raise FixtureError(tensor_path, f"tensor {key!r} has shape {tensors[key].shape}, expected {shape}")
    weights = {key: value.astype(np.float32) for key, value in tensors.items()}
    return ModelWeights(name, config, weights, document["provenance"]["seed"])


def write_tiny_model(directory: Path = MODELS_DIR) -> ModelWeights:
    config = T3Config.tiny()
    model = ModelWeights(TINY_MODEL, config, seeded_weights(config, TINY_SEED), TINY_SEED)
    write_model(model, directory)
    return model
