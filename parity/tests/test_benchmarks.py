"""One analyzer step after T generated frames (S = 300 text tokens), both implementations.

Off in the default run (--benchmark-skip in pyproject); run them with
    pytest parity --benchmark-only
Compare the implementations within one run (ratios); absolute times depend on the machine.
"""

import numpy as np
import pytest

from parity.analyzer.mlx_port import AlignmentStreamAnalyzer as MlxPort
from parity.analyzer.torch_ref import AlignmentStreamAnalyzer as Reference
from parity.replay import array_api_for

COND, TEXT, N_BOS = 34, 300, 2


def analyzer_after(cls, frames: int):
    """An analyzer in the state of a run `frames` frames in, near its end; and a reset to it."""
    api = array_api_for(cls)
    rng = np.random.default_rng(0)
    alignment = api.from_numpy(rng.random((frames, TEXT), dtype=np.float32) * 0.01, "float32")
    analyzer = cls(text_tokens_slice=(COND, COND + TEXT), eos_idx=0)
    completed_rows = (rng.random((10, TEXT), dtype=np.float32) * 0.01).tolist()  # a quiet tail: no forced EOS
    attention = rng.random((3, 1, COND + TEXT + N_BOS + frames), dtype=np.float32) * 0.01
    position = min(TEXT - 2, frames // 3)  # about three frames per text token
    attention[:, 0, COND + position] = 0.8

    def reset():
        analyzer.alignment = alignment  # steps concatenate into a new array; this one stays intact
        analyzer.curr_frame_pos, analyzer.text_position = frames, position
        analyzer.started, analyzer.started_at = True, 2
        analyzer.complete = position >= TEXT - 3  # T=2000: the end-of-text checks run too
        analyzer.completed_at = frames - 10 if analyzer.complete else None
        analyzer._end_of_text = type(analyzer._end_of_text)(TEXT)
        if analyzer.complete:
            analyzer._end_of_text.add_rows(completed_rows)
        analyzer.generated_tokens = [1, 2, 3]
        analyzer.last_aligned_attns = [api.from_numpy(head, "float32") for head in attention]

    logits = api.from_numpy(rng.normal(size=(1, 8194)).astype(np.float32), "float32")
    return analyzer, reset, logits


@pytest.mark.parametrize("frames", [100, 2000])
@pytest.mark.parametrize("cls", [Reference, MlxPort], ids=["torch_ref", "mlx_port"])
def test_benchmark_step(benchmark, cls, frames):
    analyzer, reset, logits = analyzer_after(cls, frames)
    benchmark.group = f"analyzer step, T={frames}, S={TEXT}"
    out = benchmark.pedantic(lambda: analyzer.step(logits, next_token=4), setup=reset, rounds=300, warmup_rounds=20)
    assert tuple(out.shape) == (1, 8194) and tuple(analyzer.alignment.shape) == (frames + 1, TEXT)
    assert not analyzer.margins[-1].eos_forced and not analyzer.results[-1].discontinuity
