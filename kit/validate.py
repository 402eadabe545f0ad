"""`python -m kit validate [--config FILE]`: check a config in well under a second.

Runs the same parser and validators as `cdk synth` / `cdk deploy` (stacks/app_builder.py)
without importing aws_cdk, prints every error and warning with its key path, then a
one-line summary. Exit status: 0 when there is no error (warnings allowed), 1 on any
error or an unreadable config, 2 on bad command-line usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stacks.config import Finding, read_cdk_json_config, read_raw_config
from stacks.validators import validate

PROJECT_DIR = Path(__file__).resolve().parent.parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kit validate",
        description="Check the kit's config and print every error and warning at once.",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a JSON file holding the `multinode` object (default: the `multinode` context of cdk.json)",
    )
    return parser


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def report(findings: list[Finding], source: str) -> tuple[list[str], int]:
    """The lines to print (errors first, then warnings, then the summary) and the exit code."""
    errors = [f for f in findings if f.level == "error"]
    warnings = [f for f in findings if f.level == "warning"]
    lines = [str(f) for f in errors + warnings]
    counts = f"{_plural(len(errors), 'error')}, {_plural(len(warnings), 'warning')}"
    if errors:
        lines.append(f"{source}: {counts}; fix the errors before `cdk synth` / `cdk deploy`")
        return lines, 1
    lines.append(f"{source}: OK ({counts})")
    return lines, 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.config:
        source = args.config
        raw, findings = read_raw_config(args.config, None)
    else:
        source = f"{PROJECT_DIR / 'cdk.json'} (context.multinode)"
        raw, findings = read_cdk_json_config(PROJECT_DIR)
    if not findings:
        _, findings = validate(raw, os.environ)
    lines, code = report(findings, source)
    print("\n".join(lines))
    sys.stdout.flush()
    return code
