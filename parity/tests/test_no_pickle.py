"""No pickle anywhere in the project: no pickle-based loaders in code, no pickle files."""

import re
from pathlib import Path

from parity.fixtures import PROJECT_ROOT

THIS_FILE = Path(__file__).resolve()
CODE_PATTERNS = re.compile(
    r"\bimport\s+(c?pickle|dill|joblib)\b|\bfrom\s+(c?pickle|dill|joblib)\b|torch\.load\(|allow_pickle\s*=\s*True|np\.load\("
)
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".npy", ".npz", ".joblib"}
SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", ".hypothesis", ".pytest_cache", ".benchmarks", "build", "dist"}


def pickle_offenders(root: Path) -> list[str]:
    offenders = []
    for path in root.rglob("*"):
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.relative_to(root).parts):
            continue
        if not path.is_file() or path.resolve() == THIS_FILE:
            continue
        if path.suffix in PICKLE_SUFFIXES:
            offenders.append(f"{path.relative_to(root)}: pickle-format file")
        elif path.suffix in {".py", ".sh", ".toml", ".cfg", ".yml", ".yaml"} or path.parent.name == ".ci":
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if CODE_PATTERNS.search(line):
                    offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return offenders


def test_project_has_no_pickle():
    assert pickle_offenders(PROJECT_ROOT) == []


def test_scanner_catches_pickle(tmp_path):
    (tmp_path / "loader.py").write_text("import numpy as np\nimport pickle\nx = np.load('a', allow_pickle=True)\n")
    (tmp_path / "golden.pkl").write_bytes(b"\x80\x04")
    (tmp_path / "weights.pt").write_bytes(b"PK")
    found = pickle_offenders(tmp_path)
    assert len(found) == 4, found
