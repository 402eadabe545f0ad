"""`python -m kit metaflow-config`: write a Metaflow profile that points at a deployed kit stack.

Reads the stack's outputs (CloudFormation DescribeStacks, parsed by stacks.outputs.parse_outputs),
merges them into `$METAFLOW_HOME/config_<profile>.json` and prints the `@batch`/`@parallel` lines
that fit each queue's instance type.

    python -m kit metaflow-config --stack MetaflowMultinode [--queue train] [--profile multinode]
                                  [--base default-profile] [--dry-run] [--region us-east-1]

Merge rules (aws-facts.md, Metaflow: `metaflow configure import` replaces whole files, so this
command reads, merges and writes, and keeps a flat JSON object):

* precedence, lowest first: the base profile (config.json, or config_<base>.json with --base)
  < keys already in the target file < the keys this command manages (MANAGED_KEYS). The target
  is the user's file: a value they edited there wins over the base, but the kit's own keys always
  reflect the deployed stack.
* no key is ever dropped: user keys stay, and a managed key the stack no longer provides (for
  example METAFLOW_ECS_S3_ACCESS_IAM_ROLE after s3AccessRoleArn was removed) keeps its old value,
  because the file cannot tell whether the user or the kit set it.
* nothing changes -> nothing is written and no backup is made ("already up to date"); otherwise
  the old file is copied to a timestamped .bak next to it, then the new one is written to a
  temporary file in the same directory and renamed over it (atomic on POSIX).
* a base or target file that cannot be read or is not a JSON object is reported and never written.

The functions below take a boto3 client or plain paths and read METAFLOW_HOME from the
environment at call time, so a test can point them at any emulator and any directory.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from kit.aws_errors import describe_aws_error
from stacks.catalog import InstanceFacts, load_catalog
from stacks.outputs import QueueOutputs, StackOutputs, parse_outputs

JOB_QUEUE_KEY = "METAFLOW_BATCH_JOB_QUEUE"
S3_ROLE_KEY = "METAFLOW_ECS_S3_ACCESS_IAM_ROLE"
MANAGED_KEYS = (JOB_QUEUE_KEY, S3_ROLE_KEY)

DEFAULT_HOME = "~/.metaflowconfig"

# Only these states mean "the last deploy of this template succeeded". Everything else is refused:
# *_IN_PROGRESS may still change the outputs; *_FAILED stacks are broken; ROLLBACK_COMPLETE is a
# failed create (no resources); UPDATE_ROLLBACK_COMPLETE and IMPORT_ROLLBACK_COMPLETE run the
# previous template, so their outputs describe a config the user has since changed and a profile
# written from them would silently target the old queues; DELETE_COMPLETE has no resources.
GOOD_STATUSES = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE")

# Metaflow builds the file name as config_<profile>.json; keep it one plain path component.
_PROFILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# Headroom for the ECS agent and the host (AWS Batch user guide, "Compute resource memory
# management" / "Reserve system memory"): the agent registers less memory than the instance has
# (kernel and platform overhead) and AWS recommends keeping a 5% buffer for the agent and system
# processes. A job asking for more than the registered memory never leaves RUNNABLE, so the
# decorator asks for 95% of the installed memory, rounded down to whole GiB.
MEMORY_HEADROOM_FRACTION = 0.05
# ECS reserves no CPU, and Batch's VCPU turns into Docker CPU shares (a relative weight, not a cap),
# so the job can still use every core. Asking for two fewer vCPUs than the instance has costs the
# job nothing and keeps it placeable next to the agent, log router or an ECS daemon task.
CPU_HEADROOM_VCPUS = 2
# /dev/shm is a tmpfs whose pages count against the container's memory limit; NCCL needs a few
# GiB of it and PyTorch DataLoader workers pass whole batches through it. A quarter of the job's
# memory is ample for both and leaves three quarters for the processes themselves.
SHARED_MEMORY_FRACTION = 0.25


class ConfigError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


# --- stack outputs -------------------------------------------------------------------------------


def check_stack_status(stack_name: str, status: str) -> None:
    if status in GOOD_STATUSES:
        return
    if status.endswith("_IN_PROGRESS"):
        hint = "wait until it finishes, then run this again"
    elif "ROLLBACK" in status:
        hint = "the last deploy failed and was rolled back, so the outputs may be stale; fix and redeploy"
    else:
        hint = "deploy it again"
    raise ConfigError(f"stack {stack_name} is in state {status}, need one of {', '.join(GOOD_STATUSES)}: {hint}")


def fetch_outputs(cfn: Any, stack_name: str) -> StackOutputs:
    """Outputs of a kit stack, read with a CloudFormation client (any endpoint)."""
    from botocore.exceptions import ClientError

    stacks: list[dict[str, Any]] = []
    try:
        for page in cfn.get_paginator("describe_stacks").paginate(StackName=stack_name):
            stacks.extend(page["Stacks"])
    except ClientError as e:
        message = e.response.get("Error", {}).get("Message", "")
        if "does not exist" in message:
            region = cfn.meta.region_name
            raise ConfigError(
                f"stack {stack_name} not found in region {region} (check --stack, --region and the AWS account)"
            ) from None
        raise
    if not stacks:
        raise ConfigError(f"stack {stack_name} not found in region {cfn.meta.region_name}")
    stack = stacks[0]
    check_stack_status(stack_name, stack["StackStatus"])
    raw = stack.get("Outputs") or []
    try:
        outputs = parse_outputs(raw)
    except KeyError as e:
        raise ConfigError(
            f"stack {stack_name} has no output {e.args[0]!r}: it is not a stack deployed by this kit "
            "(see stacks/outputs.py for the outputs it needs)"
        ) from None
    except ValueError as e:
        raise ConfigError(f"stack {stack_name} has a malformed output ({e}): it is not a kit stack") from None
    if not outputs.queues:
        raise ConfigError(f"stack {stack_name} lists no queues in its QueueNames output: not a kit stack")
    return outputs


def choose_queue(outputs: StackOutputs, name: str | None) -> QueueOutputs:
    if name is None:
        return outputs.queues[0]
    for q in outputs.queues:
        if name in (q.name, q.job_queue_name):
            return q
    valid = ", ".join(q.name for q in outputs.queues)
    raise ConfigError(f"--queue {name!r} is not a queue of this stack; valid: {valid}")


def managed_values(outputs: StackOutputs, queue: QueueOutputs) -> dict[str, str]:
    # Metaflow passes METAFLOW_BATCH_JOB_QUEUE unchanged to batch:DescribeJobQueues and
    # batch:SubmitJob (plugins/aws/batch/batch_client.py), which take a name or an ARN. The name is
    # what the printed @batch(queue=...) lines use too, so both read the same.
    values = {JOB_QUEUE_KEY: queue.job_queue_name}
    if outputs.s3_access_role_arn:
        values[S3_ROLE_KEY] = outputs.s3_access_role_arn
    return values


# --- config files --------------------------------------------------------------------------------


def metaflow_home(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(os.path.expanduser(env.get("METAFLOW_HOME") or DEFAULT_HOME))


def check_profile_name(profile: str, option: str) -> str:
    if not _PROFILE_RE.match(profile):
        raise ConfigError(
            f"{option} {profile!r} is not a valid profile name: use letters, digits, '_', '-' and '.', "
            "not starting with '.' or '-'"
        )
    return profile


def config_path(home: Path, profile: str | None) -> Path:
    return home / ("config.json" if not profile else f"config_{profile}.json")


def read_config(path: Path, what: str) -> tuple[str, dict[str, Any]] | None:
    """(text, JSON object) of `path`, or None when the file does not exist."""
    if not path.exists():
        return None
    untouched = "it was left untouched"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"cannot read {what} {path}: {reason}; {untouched}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            f"fix it or move it away, {untouched}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{what} {path} holds a JSON {type(data).__name__}, Metaflow needs a flat object of METAFLOW_* keys; "
            f"{untouched}"
        )
    return text, data


def render(config: Mapping[str, Any]) -> str:
    # Same layout as `metaflow configure` (indent 4), but keys keep their order so a merge shows
    # up in a diff as the lines that changed, not as a reshuffle.
    return json.dumps(config, indent=4) + "\n"


def merge(base: Mapping[str, Any], target: Mapping[str, Any], managed: Mapping[str, str]) -> dict[str, Any]:
    """base < target < managed; key order: target's, then base-only keys, then new managed keys."""
    merged: dict[str, Any] = dict(target)
    for key, value in base.items():
        merged.setdefault(key, value)
    merged.update(managed)
    return merged


@dataclass(frozen=True)
class ConfigPlan:
    path: Path
    old_text: str | None  # None: the file does not exist yet
    old: dict[str, Any] | None
    new: dict[str, Any]

    @property
    def changed(self) -> bool:
        return self.old != self.new

    @property
    def new_text(self) -> str:
        return render(self.new)

    def diff(self) -> str:
        old_lines = (self.old_text or "").splitlines(keepends=True)
        if old_lines and not old_lines[-1].endswith("\n"):
            old_lines[-1] += "\n"
        return "".join(
            difflib.unified_diff(
                old_lines,
                self.new_text.splitlines(keepends=True),
                fromfile=str(self.path) if self.old is not None else "/dev/null",
                tofile=str(self.path),
            )
        )


def plan_config(home: Path, profile: str, base_profile: str | None, managed: Mapping[str, str]) -> ConfigPlan:
    """Read the base and target files and compute the merged profile; writes nothing."""
    if base_profile is None:
        found = read_config(config_path(home, None), "base config")
    else:
        base_path = config_path(home, base_profile)
        found = read_config(base_path, "base profile")
        if found is None:
            raise ConfigError(f"--base {base_profile!r}: {base_path} does not exist")
    base = found[1] if found else {}
    path = config_path(home, profile)
    existing = read_config(path, "existing profile")
    old_text, old = existing if existing else (None, None)
    return ConfigPlan(path=path, old_text=old_text, old=old, new=merge(base, old or {}, managed))


def backup(path: Path, now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    candidate = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while candidate.exists():  # two changes within one second keep both backups
        candidate = path.with_name(f"{path.name}.{stamp}.{n}.bak")
        n += 1
    shutil.copy2(path, candidate)
    return candidate


def atomic_write(path: Path, text: str) -> None:
    # mkstemp makes the file 0600: a Metaflow profile may hold service auth keys. An existing
    # file keeps its own mode.
    mode = path.stat().st_mode & 0o777 if path.exists() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def apply_plan(plan: ConfigPlan) -> Path | None:
    """Write the plan if it changes anything; returns the backup path (None for a new file)."""
    # A profile that is a symlink (dotfile managers) stays one: write through to its target.
    path = Path(os.path.realpath(plan.path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    saved = backup(path) if path.exists() else None
    atomic_write(path, plan.new_text)
    return saved


# --- usage hints ---------------------------------------------------------------------------------


def _round_down_gib(mib: float) -> int:
    return max(1024, int(mib) // 1024 * 1024)


@dataclass(frozen=True)
class BatchResources:
    cpu: int
    memory: int  # MiB
    shared_memory: int  # MiB


def batch_resources(facts: InstanceFacts) -> BatchResources:
    memory = _round_down_gib(facts.memory_mib * (1 - MEMORY_HEADROOM_FRACTION))
    return BatchResources(
        cpu=max(1, facts.vcpus - CPU_HEADROOM_VCPUS),
        memory=memory,
        shared_memory=_round_down_gib(memory * SHARED_MEMORY_FRACTION),
    )


def decorator_line(queue: QueueOutputs, facts: InstanceFacts | None) -> str:
    args = [f'queue="{queue.job_queue_name}"']
    if queue.gpus_per_node:
        args.append(f"gpu={queue.gpus_per_node}")
    elif facts is not None and facts.neuron_devices:
        # Metaflow's @batch takes Neuron devices as inferentia= (trainium= is its alias).
        kind = "trainium" if facts.family.startswith("trn") else "inferentia"
        args.append(f"{kind}={facts.neuron_devices}")
    # efa= must equal the launch template's EFA interfaces: Metaflow maps uverbs0..N-1 (aws-facts.md, EFA).
    args.append(f"efa={queue.efa_interfaces}")
    if facts is not None:
        r = batch_resources(facts)
        args += [f"cpu={r.cpu}", f"memory={r.memory}", f"shared_memory={r.shared_memory}"]
    return f"@batch({', '.join(args)})"


def usage_text(outputs: StackOutputs, profile: str, default_queue: QueueOutputs) -> str:
    catalog = load_catalog()
    lines = [
        "Use it:",
        f"    export METAFLOW_PROFILE={profile}",
        "",
        "A multi-node step, per queue (values fit the instance type, minus headroom for the ECS agent):",
    ]
    for q in outputs.queues:
        facts = catalog.get(q.instance_type)
        default = " - the profile's default queue" if q == default_queue else ""
        lines += [
            "",
            f"  queue {q.name} ({q.instance_type}, up to {q.max_nodes} nodes){default}:",
            f"    self.next(self.train, num_parallel={q.max_nodes})  # nodes, 1..{q.max_nodes} (MaxNodes)",
            "    ...",
            "    @parallel",
            f"    {decorator_line(q, facts)}",
            "    @step",
            "    def train(self): ...",
        ]
        if facts is None:
            lines.append(f"    # {q.instance_type} is not in the kit's catalog: set cpu/memory/shared_memory yourself")
    lines += ["", "Run with `python flow.py run`: @parallel flows cannot be deployed to AWS Step Functions."]
    return "\n".join(lines)


# --- command -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kit metaflow-config",
        description="Write $METAFLOW_HOME/config_<profile>.json from a deployed kit stack's outputs.",
    )
    p.add_argument("--stack", required=True, help="CloudFormation stack name (or id) of the deployed kit")
    p.add_argument("--queue", help="queue (config name) for METAFLOW_BATCH_JOB_QUEUE; default: the first one")
    p.add_argument("--profile", help="Metaflow profile to write; default: the stack's MetaflowProfile output")
    p.add_argument("--base", help="copy keys from config_<BASE>.json instead of config.json")
    p.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    p.add_argument("--region", help="AWS region of the stack; default: the AWS CLI/SDK default")
    return p


@dataclass(frozen=True)
class Result:
    outputs: StackOutputs
    queue: QueueOutputs
    profile: str
    plan: ConfigPlan
    written: bool
    backup: Path | None


def configure(
    cfn: Any,
    stack: str,
    *,
    queue: str | None = None,
    profile: str | None = None,
    base: str | None = None,
    dry_run: bool = False,
    home: Path | None = None,
) -> Result:
    """Everything the command does except printing: read the stack with `cfn` (a CloudFormation
    client for any endpoint), merge, and write unless `dry_run` or nothing changed.
    `home` defaults to $METAFLOW_HOME. Raises ConfigError and botocore errors."""
    outputs = fetch_outputs(cfn, stack)
    chosen = choose_queue(outputs, queue)
    if profile is not None:
        profile = check_profile_name(profile, "--profile")
    else:
        profile = check_profile_name(outputs.metaflow_profile, "the stack's MetaflowProfile output")
    base = check_profile_name(base, "--base") if base is not None else None
    plan = plan_config(home or metaflow_home(), profile, base, managed_values(outputs, chosen))
    write = plan.changed and not dry_run
    saved = apply_plan(plan) if write else None
    return Result(outputs=outputs, queue=chosen, profile=profile, plan=plan, written=write, backup=saved)


def run(args: argparse.Namespace, session: Any, out: TextIO) -> int:
    """The command body, with an injected boto3 session."""
    r = configure(
        session.client("cloudformation"),
        args.stack,
        queue=args.queue,
        profile=args.profile,
        base=args.base,
        dry_run=args.dry_run,
    )
    if not r.plan.changed:
        print(f"{r.plan.path} is already up to date", file=out)
    elif not r.written:
        print(r.plan.diff(), end="", file=out)
        print(f"(dry run: {r.plan.path} not written)", file=out)
    else:
        saved = f" (previous version saved as {r.backup.name})" if r.backup else ""
        print(f"wrote {r.plan.path}{saved}", file=out)
    print("", file=out)
    print(usage_text(r.outputs, r.profile, r.queue), file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    args = _parser().parse_args(argv)
    try:
        session = boto3.session.Session(region_name=args.region)
        return run(args, session, sys.stdout)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
    except (BotoCoreError, ClientError) as e:
        print(f"error: {describe_aws_error(e)}", file=sys.stderr)
    return 1
