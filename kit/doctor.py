"""`python -m kit doctor`: check a deployed stack's LIVE resources for what breaks multi-node
(EFA) training on AWS Batch, and say how to fix each problem in one line.

    python -m kit doctor --stack metaflow-multinode [--queue train] [--json]
                         [--region us-east-1] [--profile multinode] [--aws-profile NAME]

It reads the stack's outputs from CloudFormation, then runs the checks of kit/doctor_checks.py
with boto3. Output: a table (PASS / WARN / FAIL / SKIP, what was checked, a fix under each
non-PASS), or with --json a list of objects on stdout. While it calls AWS, a progress line
goes to stderr when stderr is a terminal. Exit code: 1 if any check FAILs, 0 otherwise, 2 when
it cannot start (no such stack, no credentials, bad option).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from kit.doctor_checks import STATUSES, CheckResult, Live, error_code, run_checks
from stacks.outputs import QueueOutputs, StackOutputs, parse_outputs

# CloudFormation/STS codes that mean "these credentials are no good".
BAD_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
    }
)


class DoctorError(Exception):
    """Doctor cannot start; the message is the one line the user sees (exit 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kit doctor",
        description="Check a deployed metaflow-multinode stack's live AWS resources and print a fix for each problem.",
    )
    parser.add_argument("--stack", required=True, help="CloudFormation stack name (config key stackName)")
    parser.add_argument("--queue", help="check only this queue (config name or job queue name); default: all")
    parser.add_argument("--json", action="store_true", help="print a JSON list of results on stdout")
    parser.add_argument("--region", help="AWS region; default: AWS_REGION / the AWS profile's region")
    parser.add_argument(
        "--profile",
        help="Metaflow profile to check (config_<profile>.json in $METAFLOW_HOME); default: the stack's "
        "MetaflowProfile output",
    )
    parser.add_argument("--aws-profile", help="AWS credentials profile; default: AWS_PROFILE / the default chain")
    return parser


def read_stack(session: Any, stack_name: str) -> dict[str, Any]:
    """The DescribeStacks record; DoctorError with one line for every way that can fail."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    region = session.region_name
    try:
        stacks = session.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise DoctorError(
            f"no usable AWS credentials ({exc}): set AWS_PROFILE or pass --aws-profile, or export AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY"
        ) from exc
    except NoRegionError as exc:
        raise DoctorError("no AWS region: pass --region or set AWS_REGION") from exc
    except EndpointConnectionError as exc:
        raise DoctorError(f"cannot reach CloudFormation: {exc}") from exc
    except ClientError as exc:
        code, message = error_code(exc), exc.response.get("Error", {}).get("Message", "")
        if code == "ValidationError" and "does not exist" in message:
            raise DoctorError(
                f"stack {stack_name!r} not found in {region}: check --stack and --region, or deploy it (cdk deploy)"
            ) from exc
        if code in BAD_CREDENTIAL_CODES:
            raise DoctorError(f"AWS rejected the credentials ({code}): {message}") from exc
        raise DoctorError(f"cannot read stack {stack_name!r}: {code}: {message}") from exc
    except BotoCoreError as exc:
        raise DoctorError(f"cannot read stack {stack_name!r}: {exc}") from exc
    if not stacks:
        raise DoctorError(f"stack {stack_name!r} not found in {region}")
    return dict(stacks[0])


def stack_outputs(stack: Mapping[str, Any], stack_name: str) -> StackOutputs:
    try:
        return parse_outputs(stack.get("Outputs") or [])
    except KeyError as exc:
        raise DoctorError(
            f"stack {stack_name!r} has no output {exc.args[0]!r}: it was not deployed by this kit, or its deploy did "
            "not finish (cdk deploy)"
        ) from exc
    except ValueError as exc:
        raise DoctorError(f"stack {stack_name!r} has an output doctor cannot read: {exc}") from exc


def select_queues(outputs: StackOutputs, wanted: str | None, stack_name: str) -> tuple[QueueOutputs, ...]:
    if wanted is None:
        return outputs.queues
    found = tuple(q for q in outputs.queues if wanted in (q.name, q.job_queue_name, q.job_queue_arn))
    if not found:
        valid = ", ".join(q.name for q in outputs.queues) or "(none)"
        raise DoctorError(f"--queue {wanted!r} is not a queue of stack {stack_name!r}; valid: {valid}")
    return found


def render_table(results: Sequence[CheckResult], header: str) -> str:
    """One row per result: STATUS, what was checked, what was found; a fix line under each non-PASS."""
    labels = [f"[{r.queue}] {r.title}" if r.queue else r.title for r in results]
    width = max([len("CHECK"), *map(len, labels)])
    lines = [header, "", f"{'STATUS':<6}  {'CHECK':<{width}}  RESULT"]
    for r, label in zip(results, labels, strict=True):
        lines.append(f"{r.status:<6}  {label:<{width}}  {r.detail}")
        if r.status != "PASS" and r.fix:
            lines.append(f"{'':<6}  {'':<{width}}  fix: {r.fix}")
    counts = Counter(r.status for r in results)
    lines += ["", ", ".join(f"{counts[s]} {s}" for s in STATUSES)]
    return "\n".join(lines)


def make_progress(stream: TextIO) -> tuple[Callable[[str], None] | None, Callable[[], None]]:
    """A one-line "checking X..." indicator that rewrites itself, on a terminal only."""
    if not stream.isatty():
        return None, lambda: None
    last = [0]

    def show(what: str) -> None:
        text = f"checking {what}..."[:120]
        stream.write("\r" + text.ljust(last[0]))
        stream.flush()
        last[0] = len(text)

    def clear() -> None:
        stream.write("\r" + " " * last[0] + "\r")
        stream.flush()

    return show, clear


def diagnose(
    session: Any,
    stack_name: str,
    *,
    queue: str | None = None,
    metaflow_profile: str | None = None,
    env: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[StackOutputs, list[CheckResult]]:
    """Read the stack, run every check; DoctorError when it cannot start."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from stacks.catalog import load_catalog

    stack = read_stack(session, stack_name)
    outputs = stack_outputs(stack, stack_name)
    queues = select_queues(outputs, queue, stack_name)
    live = Live(
        session=session,
        outputs=outputs,
        stack_name=stack_name,
        catalog=load_catalog(),
        stack=stack,
        env=dict(os.environ if env is None else env),
        metaflow_profile=metaflow_profile,
    )
    try:
        return outputs, run_checks(live, queues, progress)
    except NoCredentialsError as exc:
        raise DoctorError(f"no usable AWS credentials: {exc}") from exc
    except EndpointConnectionError as exc:
        raise DoctorError(f"lost the AWS endpoint: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import boto3
    from botocore.exceptions import ProfileNotFound

    show, clear = make_progress(sys.stderr)
    try:
        try:
            session = boto3.Session(region_name=args.region, profile_name=args.aws_profile)
        except ProfileNotFound as exc:
            raise DoctorError(f"{exc} (--aws-profile or AWS_PROFILE)") from exc
        if not session.region_name:
            raise DoctorError("no AWS region: pass --region or set AWS_REGION")
        if show:
            show(f"stack {args.stack}")
        outputs, results = diagnose(session, args.stack, queue=args.queue, metaflow_profile=args.profile, progress=show)
    except DoctorError as exc:
        clear()
        print(f"doctor: {exc}", file=sys.stderr)
        return 2
    clear()
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        names = ", ".join(q.name for q in select_queues(outputs, args.queue, args.stack))
        print(render_table(results, f"doctor: stack {args.stack} in {session.region_name}, queues: {names}"))
    return 1 if any(r.status == "FAIL" for r in results) else 0
