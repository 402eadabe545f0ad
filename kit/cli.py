"""Dispatch `python -m kit <command>` to the command modules, importing only the one used
(so `validate` stays fast and never imports aws_cdk)."""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("kit.validate", "check a config and print every error and warning"),
    "regen-catalog": ("kit.catalog", "regenerate stacks/data/instance_types.json"),
    "sandbox": ("kit.sandbox.cli", "start/stop/check the local AWS emulator (up|down|status|reset)"),
    "demo": ("kit.sandbox.demo", "deploy cdk.json's config into the local sandbox and verify it"),
    "doctor": ("kit.doctor", "check a deployed stack's live resources and print a fix for each problem"),
    "metaflow-config": ("kit.metaflow_config", "write a Metaflow profile from a deployed stack's outputs"),
    "smoke": ("kit.smoke", "run an EFA/NCCL all_reduce smoke test on a queue and judge it"),
}


def _usage() -> str:
    lines = ["usage: python -m kit <command> [options]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result: int = module.main(rest)
    return result
