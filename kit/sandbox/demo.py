"""`python -m kit demo`: the kit end to end on this machine, no AWS account needed.

Starts (or reuses) the sandbox emulator, bootstraps CDK in it once, runs the real
`cdk deploy --require-approval never` of the config in cdk.json, checks every resource of the
stack with boto3 (kit/sandbox/verify.py), runs the post-deploy steps, then prints the stack's
outputs, where everything is and how to stop the emulator. Re-running is safe: the emulator and
the bootstrap are reused and an unchanged stack deploys as "no changes".

    python -m kit demo [--state-dir DIR] [--quiet]

Exit codes: 0 deployed and verified, 1 a step failed (the message says which and why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.sandbox import ACCOUNT
from kit.sandbox.lifecycle import DEFAULT_STATE_DIR, PROJECT_DIR, Sandbox, SandboxError, ServerInfo

BOOTSTRAP_STACK = "CDKToolkit"


class DemoError(Exception):
    """A demo step failed; the message is for the user."""


@dataclass
class DemoContext:
    """What a demo step gets: the running sandbox, the environment for subprocesses (AWS SDKs
    and cdk pointed at the emulator), the validated config, and after the deploy the parsed
    stack outputs and the cloud assembly it was deployed from."""

    sandbox: Sandbox
    info: ServerInfo
    env: dict[str, str]
    config: Any  # stacks.config.KitConfig
    echo: bool
    outputs: Any = None  # stacks.outputs.StackOutputs, set by the deploy step
    assembly: Path | None = None
    notes: list[str] = field(default_factory=list)  # extra lines for the final summary

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.info.endpoint,
            region_name=self.config.region,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )


DemoStep = Callable[[DemoContext], None]


def post_deploy_steps() -> list[tuple[str, DemoStep]]:
    """Hook: steps run after the stack is deployed and verified, in this order, each with the
    DemoContext; a step raises DemoError to stop the demo. This is where `metaflow-config`
    (write the Metaflow profile from ctx.outputs) and `doctor` (check the live resources) plug
    in, e.g. `steps.append(("metaflow-config", run_metaflow_config))`."""
    steps: list[tuple[str, DemoStep]] = [
        ("metaflow-config: write the Metaflow profile from the stack outputs", step_metaflow_config),
        ("doctor: check the live resources against every rule", step_doctor),
    ]
    return steps


def _kit_command(ctx: DemoContext, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m kit ...` as a user would, against the emulator, with the sandbox's own
    METAFLOW_HOME so the demo never touches the user's ~/.metaflowconfig."""
    env = {**ctx.env, "METAFLOW_HOME": str(ctx.sandbox.state_dir / "metaflow")}
    proc = subprocess.run(
        [sys.executable, "-m", "kit", *args], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    if ctx.echo or proc.returncode != 0:
        print("\n".join(f"  {line}" for line in (proc.stdout + proc.stderr).rstrip().splitlines()))
    return proc


def step_metaflow_config(ctx: DemoContext) -> None:
    proc = _kit_command(ctx, "metaflow-config", "--stack", ctx.config.stack_name)
    if proc.returncode != 0:
        raise DemoError(f"metaflow-config exited {proc.returncode}")
    home = ctx.sandbox.state_dir / "metaflow"
    ctx.notes.append(f"metaflow:  METAFLOW_HOME={home} METAFLOW_PROFILE={ctx.config.metaflow.profile}")


def step_doctor(ctx: DemoContext) -> None:
    proc = _kit_command(ctx, "doctor", "--stack", ctx.config.stack_name)
    if proc.returncode != 0:
        raise DemoError(f"doctor found failures (exit {proc.returncode}); see the table above")
    ctx.notes.append(f"doctor:    python -m kit doctor --stack {ctx.config.stack_name} (no FAIL)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kit demo", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="the sandbox's state directory")
    parser.add_argument("--quiet", action="store_true", help="do not stream the cdk CLI's output")
    return parser


def _load_config(env: dict[str, str]) -> Any:
    from stacks.app_builder import load_config
    from stacks.config import ConfigError, load_cdk_json_context

    try:
        config, warnings = load_config(None, load_cdk_json_context(PROJECT_DIR), env)
    except ConfigError as exc:
        lines = "\n".join(f"  {f}" for f in exc.findings)
        raise DemoError(f"cdk.json's config has errors (python -m kit validate):\n{lines}") from exc
    for warning in warnings:
        print(f"  {warning}")
    return config


def _bootstrapped(ctx: DemoContext) -> bool:
    from kit.sandbox.verify import describe_stack

    stack = describe_stack(ctx.client("cloudformation"), BOOTSTRAP_STACK)
    return bool(
        stack and str(stack.get("StackStatus", "")).endswith("_COMPLETE") and "DELETE" not in stack["StackStatus"]
    )


def step_bootstrap(ctx: DemoContext) -> None:
    from kit.sandbox import cdk

    if _bootstrapped(ctx):
        print(f"  already bootstrapped ({BOOTSTRAP_STACK} exists)")
        return
    cdk.bootstrap(ctx.env, ctx.sandbox.state_dir / "bootstrap", ctx.config.region, echo=ctx.echo)


def step_deploy(ctx: DemoContext) -> None:
    from kit.sandbox import cdk

    ctx.assembly = ctx.sandbox.state_dir / "cdk.out"
    cdk.deploy(ctx.env, ctx.assembly, echo=ctx.echo)


def step_verify(ctx: DemoContext) -> None:
    from kit.sandbox.verify import Clients, expected_for, verify_deployment

    clients = Clients(ctx.client("cloudformation"), ctx.client("ec2"), ctx.client("batch"))
    result = verify_deployment(clients, expected_for(ctx.config))
    ctx.outputs = result.outputs
    if result.problems:
        lines = "\n".join(f"  - {p}" for p in result.problems)
        raise DemoError(f"the deployed stack is not what the config asks for:\n{lines}")
    checked = ", ".join(result.by_area)
    print(f"  every resource checked with boto3: {checked}")


def _print_summary(ctx: DemoContext) -> None:
    stack = ctx.config.stack_name
    raw = ctx.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    print(f"\nStack {stack} (account {ACCOUNT}, {ctx.config.region}) outputs:")
    width = max((len(o["OutputKey"]) for o in raw), default=0)
    for o in sorted(raw, key=lambda o: o["OutputKey"]):
        print(f"  {o['OutputKey']:<{width}}  {o['OutputValue']}")
    from kit.sandbox.cli import describe

    print("\nSandbox:")
    print("\n".join(f"  {line}" for line in describe(ctx.sandbox, ctx.info)))
    if ctx.assembly is not None:
        print(f"  template:  {ctx.assembly}")
    for note in ctx.notes:
        print(f"  {note}")
    print(f"\nUse it: `source {ctx.sandbox.env_file}`; then boto3, the AWS CLI and `npx cdk` talk to the emulator.")


def main(argv: list[str] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args.state_dir, echo=not args.quiet)
    except (DemoError, SandboxError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        # The emulator stopped answering (or refused a call) in the middle of the demo.
        log = Sandbox(args.state_dir).log_file
        print(f"\nerror: the sandbox emulator failed a call: {exc} (its log: {log})", file=sys.stderr)
        return 1


def _run(state_dir: Path, echo: bool) -> int:
    from kit.sandbox.cdk import CdkError

    probe = Sandbox(state_dir)
    print("[1/5] config: cdk.json")
    config = _load_config({"CDK_DEFAULT_ACCOUNT": ACCOUNT, "CDK_DEFAULT_REGION": probe.region})
    sandbox = Sandbox(state_dir, region=config.region)
    print("[2/5] sandbox: start or reuse the emulator")
    info, started = sandbox.up()
    print(f"  {'started' if started else 'reused'} {info.endpoint}")
    ctx = DemoContext(sandbox=sandbox, info=info, env=sandbox.process_env(info), config=config, echo=echo)
    steps: list[tuple[str, DemoStep]] = [
        (f"[3/5] bootstrap: cdk bootstrap aws://{ACCOUNT}/{config.region}", step_bootstrap),
        (f"[4/5] deploy: cdk deploy {config.stack_name} (the config in cdk.json)", step_deploy),
        ("[5/5] verify: every resource of the stack, with boto3", step_verify),
    ]
    steps += [(f"[+] {name}", step) for name, step in post_deploy_steps()]
    for title, step in steps:
        print(title)
        try:
            step(ctx)
        except CdkError as exc:
            raise DemoError(f"{title.split(':')[0]} failed: {exc}") from exc
    _print_summary(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
