"""The oracle: chatterbox-tts 0.1.7's own `alignment_stream_analyzer.py`, run unmodified.

The wheel is fetched once with `pip download --no-deps` into a cache, checked against a
pinned sha256, and only that one file is loaded by path (it needs nothing but torch), so
none of chatterbox's heavy dependencies are installed. Set CHATTERBOX_PARITY_CACHE to move
the cache (default ~/.cache/chatterbox-parity).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from .compare import Divergence, compare_steps
from .deviations import explains
from .replay import TraceInputs, run_trace

REQUIREMENT = "chatterbox-tts==0.1.7"
WHEEL = "chatterbox_tts-0.1.7-py3-none-any.whl"
WHEEL_SHA256 = "83782500e3ad4e7c919132e9d7eb8755f29f57c5bde5ec48c655ca23a4eb113c"
ANALYZER_MEMBER = "chatterbox/models/t3/inference/alignment_stream_analyzer.py"


class OracleUnavailable(RuntimeError):
    """The wheel could not be downloaded (registry unreachable); tests skip on this."""


class OracleIntegrityError(RuntimeError):
    """A wheel was obtained but is not the pinned one; tests fail on this."""


def cache_dir() -> Path:
    root = os.environ.get("CHATTERBOX_PARITY_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "chatterbox-parity"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_wheel() -> Path:
    """The pinned 0.1.7 wheel, downloaded on first use."""
    wheel = cache_dir() / WHEEL
    if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
        command = [sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps", "--only-binary=:all:",
                   "--dest", tmp, "--quiet", "--disable-pip-version-check"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise OracleUnavailable(f"`pip download {REQUIREMENT}` timed out after 600 s") from None
        if done.returncode != 0:
            lines = (done.stderr + done.stdout).strip().splitlines()
            errors = [line for line in lines if line.startswith("ERROR")] or lines[-2:]
            raise OracleUnavailable(f"`pip download {REQUIREMENT}` failed (registry unreachable?): {' '.join(errors)}")
        downloaded = Path(tmp) / WHEEL
        if not downloaded.is_file():
            raise OracleIntegrityError(f"pip download produced {os.listdir(tmp)}, not {WHEEL}")
        digest = _sha256(downloaded)
        if digest != WHEEL_SHA256:
            raise OracleIntegrityError(f"{WHEEL} has sha256 {digest}, expected {WHEEL_SHA256}")
        downloaded.replace(wheel)
    return wheel


@lru_cache(maxsize=1)
def load_module():
    """Import 0.1.7's alignment_stream_analyzer.py by file path."""
    root = cache_dir() / "chatterbox_tts_0.1.7"
    source = root / ANALYZER_MEMBER
    if not source.is_file():
        with zipfile.ZipFile(fetch_wheel()) as archive:
            archive.extract(ANALYZER_MEMBER, root)
    spec = importlib.util.spec_from_file_location("chatterbox_tts_0_1_7_alignment_stream_analyzer", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def model_stub(n_layers: int = 14):
    """Just enough of a transformer for 0.1.7's constructor to register (never-firing) hooks."""
    import torch

    return SimpleNamespace(layers=[SimpleNamespace(self_attn=torch.nn.Module()) for _ in range(n_layers)])


@lru_cache(maxsize=1)
def oracle_class():
    """0.1.7's AlignmentStreamAnalyzer, constructible like ours (`text_tokens_slice`, `eos_idx`)."""
    base = load_module().AlignmentStreamAnalyzer

    class Oracle017(base):
        array_api = "torch"

        def __init__(self, text_tokens_slice, eos_idx=0):
            super().__init__(model_stub(), None, text_tokens_slice=text_tokens_slice, eos_idx=eos_idx)

    return Oracle017


@dataclass
class OracleComparison:
    """How our reference fared against 0.1.7 over one trace."""

    steps_compared: int
    divergence: Optional[Divergence] = None  # an unexplained difference: a failure
    deviation: Optional[str] = None  # ledger id of the explained difference that ended the comparison
    deviation_step: Optional[int] = None


def compare_with_oracle(inputs: TraceInputs, reference_cls=None, source: str = "generated trace") -> OracleComparison:
    """Step both 0.1.7 and `reference_cls` (default: our torch_ref) through `inputs`.

    Observable behaviour is compared (returned logits and state; 0.1.7 keeps no records).
    The first difference must be one the deviation ledger explains, which ends the
    comparison (the two have parted ways); any other difference is a divergence.
    """
    if reference_cls is None:
        from .analyzer.torch_ref import AlignmentStreamAnalyzer as reference_cls
    oracle = run_trace(inputs, oracle_class(), catch=(Exception,))
    ours = run_trace(inputs, reference_cls)
    text_len = inputs.text_tokens_slice[1] - inputs.text_tokens_slice[0]
    k = -1
    for k, (theirs, mine) in enumerate(zip(oracle, ours)):
        diffs = compare_steps(theirs, mine)
        if not diffs:
            continue
        ledger_id = explains(theirs.error, mine.error, text_len, mine.state["complete"], mine.margins)
        if ledger_id:
            return OracleComparison(k + 1, deviation=ledger_id, deviation_step=k)
        return OracleComparison(k + 1, divergence=Divergence(f"{source} (0.1.7 oracle)", k, diffs, theirs, mine))
    return OracleComparison(k + 1)
