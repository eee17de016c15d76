"""Record golden analyzer fixtures: run each scenario through the PyTorch reference and
write what it did at every step (format v1, `parity.fixtures`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .analyzer.common import EOS_SUPPRESSION_MIN_TEXT
from .fixtures import ANALYZER_FIXTURES, INDEX_FILE, AnalyzerTrace, TraceConfig, TraceStep, library_versions, write_index, write_trace
from .replay import TorchArrays, TraceInputs, new_analyzer, run_step
from .scenarios import SCENARIOS, Scenario, build_inputs

REFERENCE = "parity.analyzer.torch_ref:AlignmentStreamAnalyzer"


def record_inputs(name: str, inputs: TraceInputs, stop_on_forced_eos: bool = True) -> AnalyzerTrace:
    """Run the reference over `inputs`, stopping where it forces EOS (a real loop would stop)."""
    from .analyzer.torch_ref import AlignmentStreamAnalyzer

    api = TorchArrays()
    analyzer = new_analyzer(AlignmentStreamAnalyzer, inputs)
    steps, outputs, outcome = [], [], None
    for k, (attn, logits, token) in enumerate(zip(inputs.attns, inputs.logits, inputs.prev_tokens)):
        outcome = run_step(analyzer, api, attn, logits, token, inputs.dtype)
        if outcome.error:
            raise RuntimeError(f"{name}: the reference refused step {k}: {outcome.error_message}")
        steps.append(
            TraceStep(
                prev_token=token,
                attn_shape=tuple(attn.shape),
                alignment_rows=int(outcome.alignment.shape[0]),
                state=outcome.state,
                result=outcome.result,
                margins=outcome.margins,
            )
        )
        outputs.append(outcome.logits)
        if stop_on_forced_eos and outcome.margins["eos_forced"]:
            break
    n = len(steps)
    return AnalyzerTrace(
        name=name,
        description="",
        covers=[],
        config=TraceConfig(tuple(inputs.text_tokens_slice), inputs.eos_idx, inputs.dtype, int(inputs.logits[0].shape[-1])),
        steps=steps,
        attns=list(inputs.attns[:n]),
        logits_in=np.concatenate(inputs.logits[:n]),
        logits_out=np.concatenate(outputs),
        alignment=outcome.alignment,
    )


def record_scenario(s: Scenario) -> AnalyzerTrace:
    trace = record_inputs(s.name, build_inputs(s))
    missing = set(s.covers) - observed_coverage(trace)
    if missing:
        raise RuntimeError(f"scenario {s.name} claims {sorted(missing)} but the recorded run does not show it")
    trace.description, trace.covers = s.description, list(s.covers)
    trace.provenance = {
        "generator": f"parity.scenarios:{s.name}",
        "seed": s.seed,
        "recorded_by": REFERENCE,
        "versions": library_versions(),
    }
    return trace


def record_all(directory: Path = ANALYZER_FIXTURES, only: Optional[Iterable[str]] = None, progress: bool = True) -> list[str]:
    """Re-record the scenario fixtures (all, or `only` these) and rewrite the index."""
    from tqdm import tqdm

    names = list(only) if only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    for name in tqdm(names, desc="recording analyzer fixtures", unit="fixture", disable=not progress):
        write_trace(directory, record_scenario(SCENARIOS[name]()))
    if not only:  # a full re-record drops fixtures whose scenario is gone
        for path in [*directory.glob("*.json"), *directory.glob("*.safetensors")]:
            if path.stem not in SCENARIOS and path.name != INDEX_FILE:
                path.unlink()
    write_index(directory, sorted(p.stem for p in directory.glob("*.safetensors")))
    return names


def _tie_in_last_row(trace: AnalyzerTrace, k: int) -> bool:
    row = trace.alignment[trace.steps[k].alignment_rows - 1]
    return row.max() > 0 and int(np.count_nonzero(row == row.max())) > 1


def _stalled(trace: AnalyzerTrace, frames: int = 20) -> bool:
    run, last = 0, None
    for step in trace.steps:
        position = step.state["text_position"]
        run = run + 1 if position == last and not step.state["complete"] else 0
        last = position
        if run >= frames:
            return True
    return False


def observed_coverage(trace: AnalyzerTrace) -> set[str]:
    """The analyzer branches a recorded trace actually exercised."""
    S = trace.config.text_len
    results = [s.result for s in trace.steps]
    margins = [s.margins for s in trace.steps]
    seen = {f"dtype:{trace.config.dtype}"}
    flags = {
        "false_start": any(r["false_start"] for r in results),
        "late_start": (trace.steps[-1].state["started_at"] or 0) > 2,
        "eos_suppressed": any(m["eos_suppressed"] for m in margins),
        "eos_suppression_lifted": S > EOS_SUPPRESSION_MIN_TEXT and any(not m["eos_suppressed"] for m in margins),
        "eos_not_suppressed_short_text": S <= EOS_SUPPRESSION_MIN_TEXT and any(m["frame_position"] < S - 3 for m in margins),
        "discontinuity_forward": any(r["discontinuity"] and m["position_jump"] >= 7 for r, m in zip(results, margins)),
        "discontinuity_backward": any(r["discontinuity"] and m["position_jump"] <= -4 for r, m in zip(results, margins)),
        "long_tail": any(r["long_tail"] for r in results),
        "alignment_repetition": any(r["repetition"] for r in results),
        "token_repetition": any(m["token_repetition"] for m in margins),
        "forced_eos": margins[-1]["eos_forced"],
        "natural_end": trace.steps[-1].state["complete"] and not margins[-1]["eos_forced"],
        "clean_run": trace.steps[-1].state["complete"] and not any(m["eos_forced"] for m in margins)
        and not any(r["discontinuity"] for r in results),
        "short_text_completion": S <= 5 and trace.steps[-1].state["complete"],
        "argmax_tie": any(_tie_in_last_row(trace, k) for k in range(len(trace.steps))),
        "stall": _stalled(trace),
        "long_run": len(trace.steps) >= 300,
        "real_vocab": trace.config.vocab_size == 8194,
    }
    return seen | {name for name, hit in flags.items() if hit}
