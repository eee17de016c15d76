"""Golden fixture format v1: one JSON document and one safetensors file per fixture, and an
`index.json` per fixture directory holding each file's sha256 and size. See fixtures/README.md.

Loading verifies, in this order: the index parses; each file exists, has the recorded size
(else: truncated) and sha256 (else: checksum mismatch); the JSON parses and declares a known
schema and version; the tensor file parses and belongs to this fixture; every tensor the
steps need is present with the declared shape and dtype. Any fault raises `FixtureError`
naming the file and the fault. Nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

INDEX_FILE = "index.json"
INDEX_SCHEMA = "chatterbox-parity/fixture-index"
TRACE_SCHEMA = "chatterbox-parity/analyzer-trace"
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = PROJECT_ROOT / "fixtures"
ANALYZER_FIXTURES = FIXTURES_DIR / "analyzer"


class FixtureError(Exception):
    """A fixture that cannot be trusted; the message names the file and the fault."""

    def __init__(self, path, fault: str):
        super().__init__(f"{_display(path)}: {fault}")
        self.path = Path(path)
        self.fault = fault


def _display(path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


@dataclass
class TraceConfig:
    text_tokens_slice: tuple[int, int]
    eos_idx: int
    dtype: str  # the model dtype the attention and logits are cast to before each step
    vocab_size: int

    @property
    def text_len(self) -> int:
        i, j = self.text_tokens_slice
        return j - i


@dataclass
class TraceStep:
    """One analyzer step: its inputs (tensors aside) and the reference's outcome."""

    prev_token: Optional[int]
    attn_shape: tuple[int, int, int]  # (3, Lq, Lk)
    alignment_rows: int  # rows of the accumulated alignment after the step
    state: dict
    result: Optional[dict] = None
    margins: Optional[dict] = None


@dataclass
class AnalyzerTrace:
    name: str
    description: str
    covers: list[str]
    config: TraceConfig
    steps: list[TraceStep]
    attns: list[np.ndarray]  # per step, (3, Lq, Lk) float32 (values exact in config.dtype)
    logits_in: np.ndarray  # (N, V) float32
    logits_out: np.ndarray  # (N, V) float32, what the reference returned
    alignment: np.ndarray  # (T, S) float32 after the last step; step k's is alignment[:rows_k]
    provenance: dict = field(default_factory=dict)

    def tensors(self) -> dict[str, np.ndarray]:
        tensors = {f"attn.{k}": np.ascontiguousarray(a, dtype=np.float32) for k, a in enumerate(self.attns)}
        tensors["logits_in"] = np.ascontiguousarray(self.logits_in, dtype=np.float32)
        tensors["logits_out"] = np.ascontiguousarray(self.logits_out, dtype=np.float32)
        tensors["alignment"] = np.ascontiguousarray(self.alignment, dtype=np.float32)
        return tensors

    def document(self) -> dict:
        return {
            "schema": TRACE_SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "description": self.description,
            "covers": list(self.covers),
            "provenance": self.provenance,
            "config": {
                "text_tokens_slice": list(self.config.text_tokens_slice),
                "eos_idx": self.config.eos_idx,
                "dtype": self.config.dtype,
                "vocab_size": self.config.vocab_size,
            },
            "tensors": f"{self.name}.safetensors",
            "steps": [
                {
                    "prev_token": s.prev_token,
                    "attn_shape": list(s.attn_shape),
                    "alignment_rows": s.alignment_rows,
                    "state": s.state,
                    "result": s.result,
                    "margins": s.margins,
                }
                for s in self.steps
            ],
        }


def library_versions() -> dict[str, str]:
    import safetensors
    import torch

    from parity import __version__

    return {
        "chatterbox_parity": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- writing -----------------------------------------------------------------------------


def _tensor_metadata(name: str, schema: str) -> dict[str, str]:
    # One key holding sorted JSON: safetensors writes several keys in hash order, which
    # would make re-recorded files differ byte for byte.
    owner = {"schema": schema, "schema_version": SCHEMA_VERSION, "fixture": name}
    return {"chatterbox_parity": json.dumps(owner, sort_keys=True)}


def write_pair(directory: Path, name: str, document: dict, tensors: dict[str, np.ndarray]) -> list[Path]:
    """Write NAME.json and NAME.safetensors; the document carries its `schema`."""
    directory.mkdir(parents=True, exist_ok=True)
    tensor_path = directory / f"{name}.safetensors"
    json_path = directory / f"{name}.json"
    save_file(tensors, str(tensor_path), metadata=_tensor_metadata(name, document["schema"]))
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    return [json_path, tensor_path]


def write_trace(directory: Path, trace: AnalyzerTrace) -> list[Path]:
    return write_pair(directory, trace.name, trace.document(), trace.tensors())


def write_index(directory: Path, names: list[str]) -> Path:
    """Record sha256 and size of every file of the named fixtures (the whole directory's set)."""
    fixtures = {}
    for name in sorted(names):
        files = {}
        for filename in (f"{name}.json", f"{name}.safetensors"):
            path = directory / filename
            files[filename] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
        fixtures[name] = files
    index = {"schema": INDEX_SCHEMA, "schema_version": SCHEMA_VERSION, "fixtures": fixtures}
    index_path = directory / INDEX_FILE
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    return index_path


# ---- loading -----------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise FixtureError(path, "file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FixtureError(path, f"not valid JSON ({e})") from None
    if not isinstance(document, dict):
        raise FixtureError(path, "expected a JSON object at the top level")
    return document


def _check_schema(path: Path, document: dict, schema: str) -> None:
    if document.get("schema") != schema:
        raise FixtureError(path, f"schema is {document.get('schema')!r}, expected {schema!r}")
    version = document.get("schema_version")
    if version not in SUPPORTED_VERSIONS:
        raise FixtureError(
            path,
            f"unknown schema version {version!r} (this loader reads {', '.join(map(str, SUPPORTED_VERSIONS))}); "
            "re-record with `pytest parity --update-golden` or upgrade chatterbox-parity",
        )


def load_index(directory: Path = ANALYZER_FIXTURES) -> dict[str, dict]:
    path = Path(directory) / INDEX_FILE
    index = _read_json(path)
    _check_schema(path, index, INDEX_SCHEMA)
    fixtures = index.get("fixtures")
    if not isinstance(fixtures, dict):
        raise FixtureError(path, "missing the 'fixtures' table")
    return fixtures


def fixture_names(directory: Path = ANALYZER_FIXTURES) -> list[str]:
    return sorted(load_index(directory))


def verify_file(path: Path, expected: dict) -> None:
    if not path.is_file():
        raise FixtureError(path, "file is missing")
    size = path.stat().st_size
    if size < expected["bytes"]:
        raise FixtureError(path, f"truncated: {size} bytes, the index records {expected['bytes']}")
    if size > expected["bytes"]:
        raise FixtureError(path, f"{size} bytes, longer than the {expected['bytes']} the index records")
    digest = sha256_of(path)
    if digest != expected["sha256"]:
        raise FixtureError(path, f"checksum mismatch: sha256 {digest}, the index records {expected['sha256']}")


def load_pair(name: str, directory: Path, schema: str) -> tuple[dict, dict[str, np.ndarray], Path, Path]:
    """The verified (document, tensors, json path, tensor path) of one fixture."""
    directory = Path(directory)
    index = load_index(directory)
    if name not in index:
        raise FixtureError(directory / INDEX_FILE, f"no fixture named {name!r} (known: {', '.join(sorted(index))})")
    for filename, expected in index[name].items():
        verify_file(directory / filename, expected)
    json_path, tensor_path = directory / f"{name}.json", directory / f"{name}.safetensors"
    document = _read_json(json_path)
    _check_schema(json_path, document, schema)
    try:
        with safe_open(str(tensor_path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise FixtureError(tensor_path, f"not a readable safetensors file ({e})") from None
    if metadata != _tensor_metadata(name, schema):
        raise FixtureError(tensor_path, f"tensor file metadata {metadata!r} does not belong to fixture {name!r}")
    return document, tensors, json_path, tensor_path


def load_trace(name: str, directory: Path = ANALYZER_FIXTURES) -> AnalyzerTrace:
    document, tensors, json_path, tensor_path = load_pair(name, directory, TRACE_SCHEMA)
    try:
        return trace_from(document, tensors, tensor_path)
    except (KeyError, TypeError, ValueError) as e:
        raise FixtureError(json_path, f"malformed document ({type(e).__name__}: {e})") from None


def _tensor(tensors: dict, path: Path, key: str, shape: tuple) -> np.ndarray:
    if key not in tensors:
        raise FixtureError(path, f"missing tensor {key!r}")
    array = tensors[key]
    if array.dtype != np.float32:
        raise FixtureError(path, f"tensor {key!r} is {array.dtype}, expected float32")
    if tuple(array.shape) != tuple(shape):
        raise FixtureError(path, f"tensor {key!r} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    return array


def trace_from(document: dict, tensors: dict, tensor_path: Path) -> AnalyzerTrace:
    """The analyzer trace in a verified document and its tensors (also the analyzer part of
    a model trace)."""
    c = document["config"]
    config = TraceConfig(
        text_tokens_slice=tuple(int(v) for v in c["text_tokens_slice"]),
        eos_idx=int(c["eos_idx"]),
        dtype=str(c["dtype"]),
        vocab_size=int(c["vocab_size"]),
    )
    steps = [
        TraceStep(
            prev_token=s["prev_token"],
            attn_shape=tuple(int(v) for v in s["attn_shape"]),
            alignment_rows=int(s["alignment_rows"]),
            state=dict(s["state"]),
            result=s.get("result"),
            margins=s.get("margins"),
        )
        for s in document["steps"]
    ]
    if not steps:
        raise ValueError("no steps")
    name = document["name"]
    n, v, s = len(steps), config.vocab_size, config.text_len
    attns = [_tensor(tensors, tensor_path, f"attn.{k}", step.attn_shape) for k, step in enumerate(steps)]
    return AnalyzerTrace(
        name=name,
        description=document.get("description", ""),
        covers=list(document.get("covers", [])),
        config=config,
        steps=steps,
        attns=attns,
        logits_in=_tensor(tensors, tensor_path, "logits_in", (n, v)),
        logits_out=_tensor(tensors, tensor_path, "logits_out", (n, v)),
        alignment=_tensor(tensors, tensor_path, "alignment", (steps[-1].alignment_rows, s)),
        provenance=document.get("provenance", {}),
    )
