"""The golden fixtures are trustworthy: the loader refuses every kind of damaged fixture
with a message naming the file and the fault, the committed files are what the reference
records today, and together they cover every analyzer branch."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from parity.fixtures import (
    ANALYZER_FIXTURES,
    FixtureError,
    fixture_names,
    load_index,
    load_trace,
    write_index,
    write_trace,
)
from parity.compare import compare_steps
from parity.record import observed_coverage, record_scenario
from parity.replay import golden_outcome
from parity.scenarios import SCENARIOS

NAME = "short_text_s5"  # small, quick to copy and corrupt

# What issue 2 asks the scenario fixtures to cover, in observed_coverage's vocabulary.
REQUIRED_COVERAGE = {
    "clean_run", "false_start", "eos_suppressed", "eos_suppression_lifted", "eos_not_suppressed_short_text",
    "short_text_completion", "discontinuity_forward", "discontinuity_backward", "long_tail",
    "alignment_repetition", "token_repetition", "argmax_tie", "dtype:bfloat16", "dtype:float16", "stall",
    "forced_eos", "natural_end", "long_run", "real_vocab",
}


@pytest.fixture
def fixture_copy(tmp_path):
    """A private copy of one fixture (and a matching index) to damage."""
    for suffix in (".json", ".safetensors"):
        shutil.copy(ANALYZER_FIXTURES / f"{NAME}{suffix}", tmp_path)
    write_index(tmp_path, [NAME])
    return tmp_path


def refused(directory, *fragments):
    with pytest.raises(FixtureError) as caught:
        load_trace(NAME, directory)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def rewrite_tensors(directory, change):
    """Re-save the tensor file with `change` applied and re-index, so only `change` is wrong."""
    from safetensors import safe_open

    path = directory / f"{NAME}.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    change(tensors)
    save_file(tensors, str(path), metadata=metadata)
    write_index(directory, [NAME])


def rewrite_document(directory, change):
    path = directory / f"{NAME}.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    write_index(directory, [NAME])


def test_copy_loads(fixture_copy):
    assert len(load_trace(NAME, fixture_copy).steps) == len(load_trace(NAME).steps)


def test_refuses_checksum_mismatch(fixture_copy):
    path = fixture_copy / f"{NAME}.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(fixture_copy, f"{NAME}.safetensors", "checksum mismatch")


def test_refuses_truncated_file(fixture_copy):
    path = fixture_copy / f"{NAME}.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    refused(fixture_copy, f"{NAME}.safetensors", "truncated")


def test_refuses_unknown_schema_version(fixture_copy):
    rewrite_document(fixture_copy, lambda d: d.update(schema_version=99))
    refused(fixture_copy, f"{NAME}.json", "unknown schema version 99")


def test_refuses_missing_tensor(fixture_copy):
    rewrite_tensors(fixture_copy, lambda t: t.pop("attn.3"))
    refused(fixture_copy, f"{NAME}.safetensors", "missing tensor 'attn.3'")


def test_refuses_misshaped_tensor(fixture_copy):
    rewrite_tensors(fixture_copy, lambda t: t.update({"attn.2": t["attn.2"][:, :, :-1].copy()}))
    refused(fixture_copy, f"{NAME}.safetensors", "'attn.2' has shape")


def test_refuses_wrong_dtype(fixture_copy):
    rewrite_tensors(fixture_copy, lambda t: t.update(logits_in=t["logits_in"].astype(np.float64)))
    refused(fixture_copy, "'logits_in' is float64")


def test_refuses_unparsable_json(fixture_copy):
    (fixture_copy / f"{NAME}.json").write_text("{not json")
    write_index(fixture_copy, [NAME])
    refused(fixture_copy, f"{NAME}.json", "not valid JSON")


def test_refuses_garbage_tensor_file(fixture_copy):
    (fixture_copy / f"{NAME}.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    write_index(fixture_copy, [NAME])
    refused(fixture_copy, f"{NAME}.safetensors", "not a readable safetensors file")


def test_refuses_tensor_file_of_another_fixture(fixture_copy):
    other = ANALYZER_FIXTURES / "single_token_text.safetensors"
    shutil.copy(other, fixture_copy / f"{NAME}.safetensors")
    write_index(fixture_copy, [NAME])
    refused(fixture_copy, "does not belong to fixture")


def test_refuses_missing_file(fixture_copy):
    (fixture_copy / f"{NAME}.safetensors").unlink()
    refused(fixture_copy, f"{NAME}.safetensors", "file is missing")


def test_refuses_malformed_document(fixture_copy):
    rewrite_document(fixture_copy, lambda d: d["steps"][0].pop("state"))
    refused(fixture_copy, f"{NAME}.json", "malformed document")


def test_refuses_unknown_fixture_name(fixture_copy):
    with pytest.raises(FixtureError, match="no fixture named 'nope'"):
        load_trace("nope", fixture_copy)


def test_index_is_complete():
    on_disk = sorted(p.stem for p in ANALYZER_FIXTURES.glob("*.safetensors"))
    assert fixture_names() == on_disk == sorted(SCENARIOS)
    assert sum(f.stat().st_size for f in ANALYZER_FIXTURES.parent.rglob("*") if f.is_file()) < 30 * 2**20


def test_fixtures_cover_every_branch():
    covered = set().union(*(observed_coverage(load_trace(name)) for name in fixture_names()))
    assert REQUIRED_COVERAGE <= covered, f"no fixture covers {sorted(REQUIRED_COVERAGE - covered)}"
    # The check has teeth: one clean run alone covers far from everything.
    assert not REQUIRED_COVERAGE <= observed_coverage(load_trace("clean_short_sentence"))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_is_what_the_reference_records_today(name):
    """Stale goldens (reference or generator changed) fail here: run --update-golden.

    Compared like a replay, not byte for byte: libm's exp/log and torch's sums may differ
    in the last bit between platforms, which must not fail a macOS run."""
    golden, fresh = load_trace(name), record_scenario(SCENARIOS[name]())
    assert len(golden.steps) == len(fresh.steps)
    for k in range(len(golden.steps)):
        np.testing.assert_allclose(golden.attns[k], fresh.attns[k], rtol=1e-5, atol=1e-7, err_msg=f"attn.{k}")
        assert golden.steps[k].prev_token == fresh.steps[k].prev_token
        diffs = compare_steps(golden_outcome(golden, k), golden_outcome(fresh, k))
        assert not diffs, f"step {k}: " + "; ".join(map(str, diffs))
    np.testing.assert_allclose(golden.logits_in, fresh.logits_in, rtol=1e-6)


def test_round_trip(tmp_path):
    trace = record_scenario(SCENARIOS[NAME]())
    write_trace(tmp_path, trace)
    write_index(tmp_path, [NAME])
    loaded = load_trace(NAME, tmp_path)
    assert loaded.document() == trace.document()
    assert load_index(tmp_path)[NAME].keys() == {f"{NAME}.json", f"{NAME}.safetensors"}
