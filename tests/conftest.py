"""Shared fixtures: configs under tests/configs/ and one in-process synth per config per
test session (a synth costs seconds; every template test reuses it)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")


def default_config() -> dict[str, Any]:
    """The `multinode` object of cdk.json: what a newcomer deploys."""
    raw: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]["multinode"]
    return raw


def named_config(name: str) -> dict[str, Any]:
    if name == "default":
        return default_config()
    raw: dict[str, Any] = json.loads((CONFIG_DIR / f"{name}.json").read_text())
    return raw


@dataclass
class Synth:
    name: str
    config: Any  # stacks.config.KitConfig
    stack: Any  # stacks.multinode_stack.MultinodeStack
    template: Any  # aws_cdk.assertions.Template
    template_json: dict[str, Any]
    outdir: Path

    def resources(self, cfn_type: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.template_json["Resources"].items() if v["Type"] == cfn_type}

    def one(self, cfn_type: str) -> dict[str, Any]:
        found = list(self.resources(cfn_type).values())
        assert len(found) == 1, f"expected one {cfn_type}, found {len(found)}"
        return found[0]


class _SynthCache:
    def __init__(self, base: Path):
        self.base = base
        self.cache: dict[str, Synth] = {}

    def get(self, name: str) -> Synth:
        if name not in self.cache:
            from aws_cdk import App
            from aws_cdk.assertions import Template

            from stacks.app_builder import build_app, load_config

            config, warnings = load_config(None, {"multinode": named_config(name)}, {})
            outdir = self.base / name
            app, stack = build_app(config, warnings, App(outdir=str(outdir)))
            # A full app synth runs the cdk-nag plugin: unacknowledged findings raise here.
            app.synth()
            template = Template.from_stack(stack)
            self.cache[name] = Synth(name, config, stack, template, template.to_json(), outdir)
        return self.cache[name]


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> _SynthCache:
    """`synth.get("p5")` -> Synth of tests/configs/p5.json ("default" = cdk.json)."""
    return _SynthCache(tmp_path_factory.mktemp("synth"))


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, region: str) -> None:
    """Fake credentials and no trace of the developer's AWS settings, for tests against moto."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def kit_outputs_template(
    queues: dict[str, tuple[str, int, int, int]],
    *,
    queue_arn: Callable[[str], str],
    region: str = "us-east-1",
    profile: str = "multinode",
    s3_role: str | None = None,
    drop: str | None = None,
) -> str:
    """A tiny real CloudFormation template (one SNS topic) whose outputs are the kit's, as literals:
    for commands that read a deployed stack's outputs, tested against moto without a synth.
    `queues` maps a queue name to (instance type, EFA count, GPUs per node, max nodes)."""
    from stacks import outputs as out
    from stacks.plan import pascal

    values = {
        out.VPC_ID: "vpc-0123456789abcdef0",
        out.SECURITY_GROUP_ID: "sg-0123456789abcdef0",
        out.SUBNET_IDS: "subnet-0123456789abcdef0",
        out.AVAILABILITY_ZONE: f"{region}a",
        out.QUEUE_NAMES: ",".join(queues),
        out.METAFLOW_PROFILE: profile,
    }
    if s3_role:
        values[out.S3_ACCESS_ROLE_ARN] = s3_role
    for name, (itype, efa, gpus, max_nodes) in queues.items():
        p, arn = pascal(name), queue_arn(name)
        per_queue = {
            "JobQueueArn": arn,
            "JobQueueName": arn.rsplit("/", 1)[1],
            "ComputeEnvironmentArn": f"arn:aws:batch:{region}:123456789012:compute-environment/{p}CE",
            "EfaInterfaces": str(efa),
            "GpusPerNode": str(gpus),
            "InstanceType": itype,
            "MaxNodes": str(max_nodes),
            "PlacementGroupName": f"{p}Placement",
            "LaunchTemplateId": "lt-0123456789abcdef0",
            "LaunchTemplateVersion": "1",
        }
        assert set(per_queue) == set(out.QUEUE_FIELDS)
        values.update({out.queue_key(p, field): v for field, v in per_queue.items()})
    values.pop(drop or "", None)
    return json.dumps(
        {
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {key: {"Value": value} for key, value in values.items()},
        }
    )
