"""Our PyTorch reference against chatterbox-tts 0.1.7's own analyzer file, step for step,
on every fixture and on generated traces; only the ledger's deviations may differ."""

import pytest
from hypothesis import given

from parity.analyzer.torch_ref import AlignmentStreamAnalyzer as Reference
from parity.fixtures import fixture_names, load_trace
from parity.oracle import OracleUnavailable, compare_with_oracle, oracle_class
from parity.replay import TraceInputs
from parity.tests.strategies import generated_traces


@pytest.fixture(scope="session", autouse=True)
def oracle():
    try:
        return oracle_class()
    except OracleUnavailable as e:
        pytest.skip(f"chatterbox-tts 0.1.7 could not be fetched, so the oracle cannot run: {e}")


def fixture_inputs(name) -> TraceInputs:
    trace = load_trace(name)
    return TraceInputs(
        trace.config.text_tokens_slice, trace.config.eos_idx, trace.config.dtype, trace.attns,
        [trace.logits_in[k : k + 1] for k in range(len(trace.steps))], [s.prev_token for s in trace.steps],
    )


@pytest.mark.parametrize("name", fixture_names())
def test_oracle_agrees_on_fixture(name):
    trace = load_trace(name)
    comparison = compare_with_oracle(fixture_inputs(name), source=f"fixture {name!r}")
    assert comparison.divergence is None, str(comparison.divergence)
    if trace.config.text_len <= 5 and trace.steps[-1].state["complete"]:
        # 0.1.7 crashes where a short text completes; everything before must agree.
        first_complete = next(k for k, s in enumerate(trace.steps) if s.state["complete"])
        assert (comparison.deviation, comparison.deviation_step) == ("short-text-repetition", first_complete)
    else:
        assert comparison.deviation is None and comparison.steps_compared == len(trace.steps)


@given(generated_traces())
def test_oracle_agrees_on_generated_traces(inputs):
    comparison = compare_with_oracle(inputs)
    if comparison.divergence:
        pytest.fail(str(comparison.divergence), pytrace=False)


class SecondTieReference(Reference):
    """A reference that breaks argmax ties towards the later token."""

    def _argmax(self, row):
        return int(row.shape[0] - 1 - row.flip(0).argmax())


def test_oracle_catches_a_broken_reference():
    comparison = compare_with_oracle(fixture_inputs("argmax_ties"), SecondTieReference, "fixture 'argmax_ties'")
    assert comparison.divergence is not None and comparison.deviation is None
    assert "state.text_position" in str(comparison.divergence)


def test_fetch_refuses_a_wheel_with_another_hash(tmp_path, monkeypatch):
    import parity.oracle as oracle_module

    monkeypatch.setenv("CHATTERBOX_PARITY_CACHE", str(tmp_path))
    monkeypatch.setattr(oracle_module, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(oracle_module.OracleIntegrityError, match="expected 0000"):
        oracle_module.fetch_wheel()


def test_fetch_reports_an_unreachable_registry(tmp_path, monkeypatch):
    import parity.oracle as oracle_module

    monkeypatch.setenv("CHATTERBOX_PARITY_CACHE", str(tmp_path))
    for name, value in {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
                        "PIP_FIND_LINKS": "", "PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "3"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(oracle_module.OracleUnavailable, match="ERROR"):
        oracle_module.fetch_wheel()
