"""Command line: `python -m parity <command>`.

  record --text T --voice V [--name N]  record a model trace: the PyTorch T3 on a text and a voice
  record --all | --only NAME ...        re-record the committed model traces
  record-scenarios [--only NAME ...]    re-record the analyzer scenario fixtures from the PyTorch reference
  make-test-inputs                      regenerate the embedded tiny model and the test voices (seeded)
  bench [--config tiny|520m]            decoding speed with and without the analyzer, as ratios
  verify-fixtures                       check every fixture's checksums, schema and tensors
  deviations                            print the deviation ledger (differences from chatterbox-tts 0.1.7)
"""

from __future__ import annotations

import argparse
import sys

from .fixtures import ANALYZER_FIXTURES, FixtureError, fixture_names, load_trace


def record_scenarios(args) -> int:
    from .record import record_all
    from .scenarios import SCENARIOS

    try:
        names = record_all(only=args.only or None)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    steps = sum(len(load_trace(name).steps) for name in names)
    print(f"recorded {len(names)} of {len(SCENARIOS)} scenario fixtures ({steps} steps) into {ANALYZER_FIXTURES}")
    return 0


def record(args) -> int:
    import re

    from .model.record import CASES, RecordingCase, record_all, record_cases

    try:
        if args.all or args.only:
            traces = record_all(only=args.only)
        else:
            if not args.text or not args.voice:
                print("error: record needs --text and --voice (or --all / --only NAME)", file=sys.stderr)
                return 2
            name = args.name or re.sub(r"[^a-z0-9]+", "_", args.text.lower()).strip("_")[:40] + f"_{args.voice}"
            if name in {case.name for case in CASES}:
                print(f"error: {name!r} is a committed trace; choose another --name", file=sys.stderr)
                return 2
            case = RecordingCase(name, args.description or "", args.text, args.voice, args.seed, args.max_new_tokens)
            traces = record_cases([case])
    except (ValueError, FixtureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for trace in traces:
        ending = "EOS" if trace.tokens[-1] == trace.analyzer.config.eos_idx else "the step limit"
        print(f"recorded {trace.name}: {len(trace)} steps, ended at {ending}")
    return 0


def make_test_inputs(args) -> int:
    from .model.config import T3Config
    from .model.voices import write_test_voices
    from .model.weights import write_tiny_model

    model = write_tiny_model()
    voices = write_test_voices(T3Config.tiny())
    print(f"wrote model {model.name} (seed {model.seed}) and voices {', '.join(voices)}; "
          "re-record the traces: pytest parity --update-golden")
    return 0


def verify_fixtures(args) -> int:
    from .model.trace import MODEL_TRACES_DIR, load_model_trace
    from .model.voices import VOICES_DIR, load_voice
    from .model.weights import MODELS_DIR, load_model_weights

    kinds = (
        (ANALYZER_FIXTURES, load_trace, lambda t: f"{len(t.steps)} steps, {t.config.dtype}"),
        (MODEL_TRACES_DIR, load_model_trace, lambda t: f"{len(t)} steps, voice {t.voice}"),
        (VOICES_DIR, load_voice, lambda v: f"{len(v.prompt_tokens)} prompt tokens"),
        (MODELS_DIR, load_model_weights, lambda m: f"{len(m.weights)} tensors, {m.config.name}"),
    )
    checked = failures = 0
    for directory, load, describe in kinds:
        try:
            names = fixture_names(directory)
        except FixtureError as e:
            failures += 1
            print(f"FAIL {e}", file=sys.stderr)
            continue
        for name in names:
            checked += 1
            try:
                print(f"ok   {directory.name}/{name} ({describe(load(name))})")
            except FixtureError as e:
                failures += 1
                print(f"FAIL {e}", file=sys.stderr)
    print(f"{checked - failures} of {checked} fixtures verified")
    return 1 if failures else 0


def deviations(args) -> int:
    from .deviations import as_markdown

    print(as_markdown())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity", description="chatterbox-parity tools")
    commands = parser.add_subparsers(dest="command", required=True)
    trace = commands.add_parser("record", help="record a model trace: the PyTorch T3 on a text and a voice",
                                description="Run the embedded tiny T3 in PyTorch and write a model trace to "
                                "fixtures/model/, which `pytest parity` then replays against MLX.")
    trace.add_argument("--text", help="the text to speak")
    trace.add_argument("--voice", help="a voice in fixtures/voices/ (samantha, marcus)")
    trace.add_argument("--name", help="fixture name (default: from the text and voice)")
    trace.add_argument("--description", help="what the trace is for")
    trace.add_argument("--seed", type=int, default=0, help="the shared sampler's seed (default 0)")
    trace.add_argument("--max-new-tokens", type=int, default=1000, help="step limit (default 1000)")
    trace.add_argument("--all", action="store_true", help="re-record every committed model trace")
    trace.add_argument("--only", nargs="+", metavar="NAME", help="re-record these committed model traces")
    trace.set_defaults(run=record)
    scenarios = commands.add_parser("record-scenarios", help="re-record the analyzer fixtures from the PyTorch reference")
    scenarios.add_argument("--only", nargs="+", metavar="NAME", help="record only these scenarios (default: all)")
    scenarios.set_defaults(run=record_scenarios)
    commands.add_parser("make-test-inputs", help="regenerate the tiny model and the test voices").set_defaults(
        run=make_test_inputs
    )
    bench = commands.add_parser("bench", help="decoding speed with and without the analyzer (ratios in one run)")
    bench.add_argument("--config", choices=("tiny", "520m"), default="tiny", help="tiny (embedded) or 520m (random weights)")
    bench.add_argument("--steps", type=int, default=100, help="teacher-forced decode steps per run (default 100)")
    bench.add_argument("--repeats", type=int, default=5, help="interleaved rounds; medians are reported (default 5)")
    bench.add_argument("--text", help="the text (default: a 20-word sentence; a short one for 520m)")
    bench.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    bench.set_defaults(run=lambda args: __import__("parity.model.bench", fromlist=["main"]).main(args))
    commands.add_parser("verify-fixtures", help="check every fixture's checksums, schema and tensors").set_defaults(
        run=verify_fixtures
    )
    commands.add_parser("deviations", help="print the deviation ledger").set_defaults(run=deviations)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
