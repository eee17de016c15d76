"""Command line: `python -m parity <command>`.

  record-scenarios [--only NAME ...]   re-record the analyzer fixtures from the PyTorch reference
  verify-fixtures                      check every fixture's checksums, schema and tensors
  deviations                           print the deviation ledger (differences from chatterbox-tts 0.1.7)
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


def verify_fixtures(args) -> int:
    try:
        names = fixture_names()
    except FixtureError as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1
    failures = 0
    for name in names:
        try:
            trace = load_trace(name)
            print(f"ok   {name} ({len(trace.steps)} steps, {trace.config.dtype})")
        except FixtureError as e:
            failures += 1
            print(f"FAIL {e}", file=sys.stderr)
    print(f"{len(names) - failures} of {len(names)} fixtures verified")
    return 1 if failures else 0


def deviations(args) -> int:
    from .deviations import as_markdown

    print(as_markdown())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity", description="chatterbox-parity tools")
    commands = parser.add_subparsers(dest="command", required=True)
    record = commands.add_parser("record-scenarios", help="re-record the analyzer fixtures from the PyTorch reference")
    record.add_argument("--only", nargs="+", metavar="NAME", help="record only these scenarios (default: all)")
    record.set_defaults(run=record_scenarios)
    commands.add_parser("verify-fixtures", help="check every fixture's checksums, schema and tensors").set_defaults(
        run=verify_fixtures
    )
    commands.add_parser("deviations", help="print the deviation ledger").set_defaults(run=deviations)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
