"""Voices: the conditioning a T3 inference takes from a reference clip, stored as fixtures.

A voice is what upstream's `T3Cond` holds: a 256-d speaker embedding (the voice encoder's
L2-normalised output), up to `speech_cond_prompt_len` prompt speech tokens (the reference
clip, tokenized), and the emotion exaggeration. Real clips need the voice encoder and S3
tokenizer; the test voices are seeded stand-ins of the same shapes, in fixtures/voices/.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fixtures import FIXTURES_DIR, FixtureError, fixture_names, load_pair, write_index, write_pair
from .config import T3Config

VOICES_DIR = FIXTURES_DIR / "voices"
VOICE_SCHEMA = "chatterbox-parity/voice"
TEST_VOICES = {"samantha": 7001, "marcus": 7002}  # name -> seed


@dataclass
class Voice:
    name: str
    speaker_emb: np.ndarray  # (speaker_embed_size,) float32, unit norm
    prompt_tokens: np.ndarray  # (n,) int32 speech token ids
    exaggeration: float = 0.5
    description: str = ""


def synthetic_voice(name: str, seed: int, config: T3Config) -> Voice:
    rng = np.random.default_rng(seed)
    embedding = np.abs(rng.normal(size=config.speaker_embed_size))  # the voice encoder ends in a ReLU
    embedding = (embedding / np.linalg.norm(embedding)).astype(np.float32)
    speech_codes = min(config.start_speech_token, config.stop_speech_token)
    prompt = rng.integers(0, speech_codes, size=config.speech_cond_prompt_len).astype(np.int32)
    return Voice(name, embedding, prompt, 0.5, f"seeded stand-in voice (seed {seed})")


def write_voice(voice: Voice, directory: Path = VOICES_DIR) -> None:
    document = {
        "schema": VOICE_SCHEMA, "schema_version": 1, "name": voice.name,
        "description": voice.description, "exaggeration": voice.exaggeration,
    }
    write_pair(directory, voice.name, document, {
        "speaker_emb": voice.speaker_emb.astype(np.float32),
        "prompt_tokens": voice.prompt_tokens.astype(np.int32),
    })


def load_voice(name: str, directory: Path = VOICES_DIR) -> Voice:
    """A voice fixture, verified; the error lists the voices there are."""
    try:
        document, tensors, json_path, tensor_path = load_pair(name, directory, VOICE_SCHEMA)
    except FixtureError as e:
        if "no fixture named" in e.fault:
            raise FixtureError(e.path, f"no voice named {name!r}; voices: {', '.join(fixture_names(directory))}") from None
        raise
    for key, dtype in (("speaker_emb", np.float32), ("prompt_tokens", np.int32)):
        if key not in tensors or tensors[key].dtype != dtype or tensors[key].ndim != 1:
            raise FixtureError(tensor_path, f"expected a 1-D {np.dtype(dtype).name} tensor {key!r}")
    return Voice(name, tensors["speaker_emb"], tensors["prompt_tokens"], float(document["exaggeration"]),
                 document.get("description", ""))


def write_test_voices(config: T3Config, directory: Path = VOICES_DIR) -> list[str]:
    for name, seed in TEST_VOICES.items():
        write_voice(synthetic_voice(name, seed, config), directory)
    write_index(directory, sorted(TEST_VOICES))
    return sorted(TEST_VOICES)
