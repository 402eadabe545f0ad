"""`python -m kit sandbox up|down|status|reset`: the local AWS emulator the kit deploys into.

    python -m kit sandbox up [--port N] [--state-dir DIR]   start (or reuse) it, write DIR/env
    python -m kit sandbox status [--state-dir DIR]          is it running, where, what it patches
    python -m kit sandbox reset [--state-dir DIR]           forget every resource, keep running
    python -m kit sandbox down [--state-dir DIR]            stop it and remove DIR's state

Then `source .sandbox/env` points the AWS SDKs and `npx cdk` at it. Exit codes: 0 done,
1 the operation failed (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kit.sandbox.lifecycle import DEFAULT_STATE_DIR, Sandbox, SandboxError, ServerInfo


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kit sandbox",
        description="Run a local AWS emulator (moto + the kit's compatibility layer) to deploy the kit into.",
    )
    parser.add_argument(
        "action", choices=("up", "down", "status", "reset"), help="what to do with the sandbox's emulator"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the pid/port, log and env file live (default: {_display(DEFAULT_STATE_DIR)})",
    )
    parser.add_argument("--port", type=int, default=0, help="port for `up` (default: a free one)")
    return parser


def describe(sandbox: Sandbox, info: ServerInfo) -> list[str]:
    return [
        f"endpoint:  {info.endpoint}  (pid {info.pid}, moto {info.moto} + {len(info.patches)} compatibility patches)",
        f"env file:  {_display(sandbox.env_file)}   ->  source {_display(sandbox.env_file)}",
        f"log:       {_display(sandbox.log_file)}",
        "stop:      python -m kit sandbox down" + _state_option(sandbox),
    ]


def _state_option(sandbox: Sandbox) -> str:
    return "" if sandbox.state_dir == DEFAULT_STATE_DIR.resolve() else f" --state-dir {_display(sandbox.state_dir)}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.port and not 1 <= args.port <= 65535:
        print(f"error: --port must be between 1 and 65535 (or 0 for a free one), got {args.port}", file=sys.stderr)
        return 2
    sandbox = Sandbox(args.state_dir)
    try:
        if args.action == "up":
            info, started = sandbox.up(port=args.port)
            print("sandbox started" if started else "sandbox already running (reused)")
            print("\n".join(describe(sandbox, info)))
        elif args.action == "status":
            info_or_none = sandbox.running()
            if info_or_none is None:
                stale = sandbox.read_info()
                print("sandbox: not running" + (" (stale state; `up` replaces it)" if stale else ""))
                return 1
            print("sandbox: running")
            print("\n".join(describe(sandbox, info_or_none)))
        elif args.action == "reset":
            sandbox.reset()
            print("sandbox reset: every emulated resource is gone (bootstrap again before deploying)")
        else:
            stopped = sandbox.down()
            print("sandbox stopped; state removed" if stopped else "sandbox was not running; state removed")
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({exc.filename or args.state_dir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
