"""The model-level fixtures (traces, voices, the embedded model) load only when intact, and
the committed set is what the project promises."""

import shutil

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from parity.fixtures import FixtureError, fixture_names, write_index
from parity.model.trace import MODEL_TRACES_DIR, load_model_trace
from parity.model.voices import load_voice
from parity.model.weights import MODELS_DIR, TINY_MODEL, load_model_weights


def damaged_copy(tmp_path, source_dir, name, change):
    for suffix in (".json", ".safetensors"):
        shutil.copy(source_dir / f"{name}{suffix}", tmp_path)
    path = tmp_path / f"{name}.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)
    write_index(tmp_path, [name])
    return tmp_path


def test_model_trace_without_raw_logits_is_refused(tmp_path):
    directory = damaged_copy(tmp_path, MODEL_TRACES_DIR, "short_hi", lambda t: t.pop("logits_raw"))
    with pytest.raises(FixtureError, match="short_hi.safetensors: missing tensor 'logits_raw'"):
        load_model_trace("short_hi", directory)


def test_model_weights_of_the_wrong_shape_are_refused(tmp_path):
    def shrink(tensors):
        tensors["speech_head.weight"] = tensors["speech_head.weight"][:-1].copy()

    directory = damaged_copy(tmp_path, MODELS_DIR, TINY_MODEL, shrink)
    with pytest.raises(FixtureError, match="'speech_head.weight' has shape"):
        load_model_weights(TINY_MODEL, directory)


def test_unknown_voice_names_the_voices_there_are():
    with pytest.raises(FixtureError, match="no voice named 'nobody'; voices: marcus, samantha"):
        load_voice("nobody")


def test_committed_model_traces_cover_what_issue_3_asks():
    traces = [load_model_trace(name) for name in fixture_names(MODEL_TRACES_DIR)]
    text_lengths = [len(t.text_tokens) for t in traces]
    assert min(text_lengths) <= 5, "a short text (5 or fewer text tokens)"
    assert max(len(t) for t in traces) >= 300, "a long trace (300 or more steps)"
    assert len({t.voice for t in traces}) >= 2, "at least two voices"
    assert sum(1 for t in traces if 5 < len(t.text_tokens) and len(t) < 300) >= 2, "medium texts"


def test_model_traces_name_the_weights_they_were_recorded_with():
    from parity.fixtures import sha256_of

    weights = sha256_of(MODELS_DIR / f"{TINY_MODEL}.safetensors")
    for name in fixture_names(MODEL_TRACES_DIR):
        assert load_model_trace(name).model == {"name": TINY_MODEL, "sha256": weights}, name


def test_embedded_weights_are_exact_in_float16():
    weights = load_model_weights().weights
    assert all(np.array_equal(v.astype(np.float16).astype(np.float32), v) for v in weights.values())
    assert {v.dtype for v in weights.values()} == {np.dtype(np.float32)}
