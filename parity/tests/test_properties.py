"""Differential property tests: generated traces through the reference and the port under
test (--impl), compared step for step by the same helper as the fixture replay."""

import pytest
from hypothesis import given

from parity.analyzer.torch_ref import AlignmentStreamAnalyzer as Reference
from parity.replay import compare_live
from parity.tests.strategies import generated_traces


@given(generated_traces())
def test_port_matches_reference_on_generated_traces(port_class, port_arrays, inputs):
    divergence = compare_live(inputs, Reference, port_class, port_api=port_arrays)
    if divergence:
        pytest.fail(str(divergence), pytrace=False)
