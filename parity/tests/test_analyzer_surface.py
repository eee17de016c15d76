"""The surface both analyzers share (what --impl classes provide), checked on each."""

import mlx.core as mx
import numpy as np
import pytest
import torch

from parity.analyzer.common import STATE_FIELDS, AnalyzerInputError
from parity.analyzer.mlx_port import AlignmentStreamAnalyzer as MlxPort
from parity.analyzer.torch_ref import AlignmentStreamAnalyzer as Reference
from parity.replay import array_api_for

RNG = np.random.default_rng(3)
FIRST = RNG.random((3, 12, 12), dtype=np.float32) * np.float32(0.05)  # cond 2, text 8, BOS x2
FIRST[:, 10:, 2] = 0.9  # the BOS rows read the first text token: started


def one_step(cls, dtype="float32", attn=FIRST, **kwargs):
    api = array_api_for(cls)
    analyzer = cls(text_tokens_slice=(2, 10), eos_idx=3, **kwargs)
    analyzer.last_aligned_attns = [api.from_numpy(head, dtype) for head in attn]
    return analyzer, analyzer.step(api.from_numpy(np.zeros((1, 5), np.float32), dtype), next_token=7)


@pytest.mark.parametrize("cls", [Reference, MlxPort])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_alignment_is_float32_and_logits_keep_dtype(cls, dtype):
    analyzer, out = one_step(cls, dtype)
    assert str(analyzer.alignment.dtype).endswith("float32")
    assert str(out.dtype).endswith(dtype)
    assert tuple(analyzer.alignment.shape) == (2, 8)


@pytest.mark.parametrize("cls", [Reference, MlxPort])
def test_state_attributes_after_a_step(cls):
    analyzer, _ = one_step(cls)
    assert {name: getattr(analyzer, name) for name in STATE_FIELDS} | {"alignment": None} == {
        "curr_frame_pos": 1, "text_position": 0, "started": True, "started_at": 2, "complete": False,
        "completed_at": None, "generated_tokens": [7], "alignment": None,
    }


def test_mlx_port_takes_numpy_and_mx_and_returns_mx():
    analyzer = MlxPort(text_tokens_slice=(2, 10), eos_idx=3)
    analyzer.last_aligned_attns = [FIRST[0], mx.array(FIRST[1]), FIRST[2]]
    out = analyzer.step(np.zeros((1, 5), np.float32), next_token=np.int64(7))
    assert isinstance(out, mx.array) and analyzer.generated_tokens == [7]


@pytest.mark.parametrize("cls", [Reference, MlxPort])
def test_constructor_checks(cls):
    with pytest.raises(TypeError, match="text_tokens_slice"):
        cls()
    with pytest.raises(AnalyzerInputError, match="eos_idx must be >= 0"):
        cls(text_tokens_slice=(0, 4), eos_idx=-1)
    with pytest.raises(AnalyzerInputError, match="two integers"):
        cls(text_tokens_slice=(0,))


def test_mlx_port_refuses_a_model():
    with pytest.raises(TypeError, match="last_aligned_attns"):
        MlxPort(object(), None, text_tokens_slice=(0, 4))


@pytest.mark.parametrize("cls", [Reference, MlxPort])
def test_token_forms(cls):
    api = array_api_for(cls)
    analyzer = cls(text_tokens_slice=(2, 10))
    native = torch.tensor([[5]]) if cls is Reference else mx.array([[5]])
    for token in (native, np.int32(6), 7, None):
        analyzer.last_aligned_attns = [api.from_numpy(head, "float32") for head in (FIRST if analyzer.curr_frame_pos == 0 else RNG.random((3, 1, 12 + analyzer.curr_frame_pos), dtype=np.float32))]
        analyzer.step(api.from_numpy(np.zeros((1, 5), np.float32), "float32"), next_token=token)
    assert analyzer.generated_tokens == [5, 6, 7]


@pytest.mark.parametrize("cls", [Reference, MlxPort])
def test_heads_of_different_dtypes_are_refused(cls):
    api = array_api_for(cls)
    analyzer = cls(text_tokens_slice=(2, 10))
    analyzer.last_aligned_attns = [api.from_numpy(h, d) for h, d in zip(FIRST, ("float16", "float32", "float32"))]
    with pytest.raises(AnalyzerInputError, match="differ in dtype") as caught:
        analyzer.step(api.from_numpy(np.zeros((1, 5), np.float32), "float32"))
    assert caught.value.code == "dtype"
