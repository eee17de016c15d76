"""The comparison helper notices a change in any field and says where and by how much."""

import copy

import numpy as np
import pytest

from parity.compare import ALIGNMENT_ULPS, Divergence, compare_steps, describe_array_diff
from parity.fixtures import load_trace
from parity.replay import golden_outcome

TRACE = load_trace("false_start_weak_onset")
STEP = 3  # still a false start here: margins for false_start are populated


def outcome():
    return copy.deepcopy(golden_outcome(TRACE, STEP))


def changed(edit):
    port = outcome()
    edit(port)
    return compare_steps(outcome(), port)


def test_identical_outcomes_agree():
    assert compare_steps(outcome(), outcome()) == []


@pytest.mark.parametrize(
    "field, edit",
    [
        ("result.false_start", lambda o: o.result.update(false_start=not o.result["false_start"])),
        ("result.position", lambda o: o.result.update(position=o.result["position"] + 1)),
        ("decision.eos_suppressed", lambda o: o.margins.update(eos_suppressed=not o.margins["eos_suppressed"])),
        ("state.started_at", lambda o: o.state.update(started_at=7)),
        ("state.generated_tokens", lambda o: o.state["generated_tokens"].append(1)),
        ("state.alignment", lambda o: o.alignment.__setitem__((1, 0), o.alignment[1, 0] + 1e-3)),
        ("logits", lambda o: o.logits.__setitem__((0, 5), np.nextafter(o.logits[0, 5], np.inf))),
        ("logits.dtype", lambda o: setattr(o, "logits_dtype", "bfloat16")),
        ("margins.head_attention", lambda o: o.margins.update(head_attention=o.margins["head_attention"] * 1.01)),
        ("error", lambda o: setattr(o, "error", "AnalyzerInputError[shape]")),
    ],
)
def test_every_field_change_is_caught(field, edit):
    diffs = changed(edit)
    assert diffs and diffs[0].field == field, diffs


def test_alignment_tolerates_a_few_ulps_only():
    within = changed(lambda o: o.alignment.__setitem__((1, 0), np.float32(o.alignment[1, 0]) + np.spacing(np.float32(o.alignment[1, 0]))))
    beyond = changed(
        lambda o: o.alignment.__setitem__((1, 0), o.alignment[1, 0] + (ALIGNMENT_ULPS + 2) * np.spacing(o.alignment[1, 0]))
    )
    assert within == [] and [d.field for d in beyond] == ["state.alignment"]


def test_report_names_fixture_step_field_values_and_margin():
    port = outcome()
    port.result["false_start"] = False
    port.margins["head_attention"] = 0.5
    report = str(Divergence("fixture 'false_start_weak_onset'", STEP, compare_steps(outcome(), port), outcome(), port))
    assert "fixture 'false_start_weak_onset' at step 3" in report
    assert "result.false_start: reference True, port False" in report
    assert "margin head_attention" in report and "port 0.5" in report and "false start if < 0.5" in report


def test_array_diff_says_where_and_how_much():
    reference = np.zeros((3, 4), np.float32)
    port = reference.copy()
    port[1, 2], port[2, 3] = 0.25, -1.0
    text = describe_array_diff(reference, port)
    assert "2 of 12 values differ" in text and "first at [1, 2]" in text and "max |d| 1 at [2, 3]" in text
    assert describe_array_diff(np.array([np.nan]), np.array([np.nan])) is None
    assert "shape" in describe_array_diff(reference, reference[:2])
