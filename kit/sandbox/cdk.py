"""Run the project's pinned cdk CLI (node_modules/.bin/cdk, see package.json) against the sandbox:
bootstrap, deploy, destroy. Every call gets its own cloud-assembly directory (-o), never the
project's cdk.out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from kit.sandbox import ACCOUNT
from kit.sandbox.lifecycle import PROJECT_DIR

CDK_BIN = PROJECT_DIR / "node_modules" / ".bin" / "cdk"
# Lines of cdk output quoted in an error.
ERROR_TAIL_LINES = 25


class CdkError(Exception):
    """A cdk command failed (or could not start); the message ends with the tail of its output."""

    def __init__(self, message: str, output: str = "") -> None:
        self.output = output
        super().__init__(message)


def cdk_executable() -> Path:
    if not CDK_BIN.exists():
        raise CdkError(f"the cdk CLI is not installed ({CDK_BIN} is missing): run `npm ci` in {PROJECT_DIR}")
    return CDK_BIN


def run_cdk(args: Sequence[str], env: Mapping[str, str], cwd: Path = PROJECT_DIR, echo: bool = False) -> str:
    """Run `cdk <args>`; returns its combined output, raises CdkError on a non-zero exit.
    With `echo`, output is also streamed to stdout as it comes."""
    command = [str(cdk_executable()), *args]
    # Node's own warnings (the SDK's "node >= 22" notice) are noise in every sandbox command.
    full_env = {**env, "NODE_NO_WARNINGS": "1"}
    lines: list[str] = []
    try:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise CdkError(f"cannot run {command[0]}: {exc}") from exc
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if echo:
            sys.stdout.write(line)
            sys.stdout.flush()
    code = process.wait()
    output = "".join(lines)
    if code != 0:
        tail = "\n".join(output.rstrip().splitlines()[-ERROR_TAIL_LINES:])
        raise CdkError(f"`cdk {' '.join(args)}` failed (exit {code}):\n{tail}", output)
    return output


def bootstrap(env: Mapping[str, str], workdir: Path, region: str, echo: bool = False) -> str:
    """`cdk bootstrap aws://ACCOUNT/REGION`, from a folder without cdk.json (so the kit's app is
    not synthesized for it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return run_cdk(["bootstrap", f"aws://{ACCOUNT}/{region}"], env, cwd=workdir, echo=echo)


def deploy(env: Mapping[str, str], outdir: Path, config_file: Path | None = None, echo: bool = False) -> str:
    """The real `cdk deploy` (change-set method) of the kit's app: cdk.json's config, or `config_file`."""
    args = ["deploy", "--require-approval", "never", "--output", str(outdir)]
    if config_file is not None:
        args += ["--context", f"config={config_file}"]
    return run_cdk(args, env, echo=echo)


def destroy(env: Mapping[str, str], assembly: Path, echo: bool = False) -> str:
    """`cdk destroy --force` of the stack in an already synthesized cloud assembly (the `outdir`
    of its deploy), so the app is not synthesized again."""
    return run_cdk(["destroy", "--force", "--app", str(assembly)], env, echo=echo)
