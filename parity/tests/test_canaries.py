"""The replay suite, run with --impl on each known-bad port, must fail, and say why."""

import subprocess
import sys

import pytest

from parity.fixtures import PROJECT_ROOT

REPLAY = "parity/tests/test_replay.py"


def run_replay(impl: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", REPLAY, "-q", "-p", "no:cacheprovider", "--impl", impl]
    return subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)


def test_replay_passes_the_real_port():
    # The control: without it a broken environment would make every canary "fail" for us.
    done = run_replay("parity.analyzer.mlx_port:AlignmentStreamAnalyzer")
    assert done.returncode == 0, done.stdout[-3000:]


@pytest.mark.parametrize(
    "canary, expected_field",
    [
        ("NoOpMonotonicMask", "state.alignment"),
        ("WrongHead", "state.alignment"),
        ("TiesFromTheEnd", "state.text_position"),
        ("ForgetsStartedAt", "state.started_at"),
    ],
)
def test_replay_rejects_canary(canary, expected_field):
    done = run_replay(f"parity.tests.canaries:{canary}")
    assert done.returncode == 1, f"the replay suite passed a known-bad port:\n{done.stdout[-3000:]}"
    assert "port diverged from the reference" in done.stdout
    assert expected_field in done.stdout, done.stdout[-3000:]
