"""Replay every golden fixture through the port under test (--impl), step for step."""

import pytest

from parity.fixtures import fixture_names, load_trace
from parity.replay import replay_trace


@pytest.mark.parametrize("name", fixture_names())
def test_replay_matches_reference(name, port_class, port_arrays):
    divergence = replay_trace(load_trace(name), port_class, port_arrays)
    if divergence:
        pytest.fail(str(divergence), pytrace=False)
