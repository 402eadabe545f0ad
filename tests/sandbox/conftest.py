"""Fixtures of the sandbox tier: the kit deployed with the real cdk CLI into the local emulator.

One emulator per test session (`python -m kit.sandbox.server` on a free port, state under a
pytest tmp dir, never the user's .sandbox/), bootstrapped once. Deploys are shared: a config is
deployed once per session and reused by every test that asks for it.

Fixtures to build on (Metaflow and doctor tests go in this folder and just request them):

``sandbox`` (session) -> SandboxSession
    .endpoint, .region, .state_dir
    .env                  environment for subprocesses: the AWS SDKs, the AWS CLI and `cdk` all
                          talk to the emulator (fake credentials, CDK_HOME, no user ~/.aws)
    .client("batch")      a boto3 client on the emulator; .clients() the three verify.py needs
    .deploy(config)       real `cdk deploy` of a config dict (the `multinode` object), written to a
                          JSON file and passed as `-c config=FILE`; returns a Deployment
    .destroy(deployment)  real `cdk destroy`; asserts with boto3 that the stack is gone
    .reset()              forget every emulated resource (moto reset), bootstrap again on next deploy

``deployed_stack`` (session) -> callable(config: dict) -> Deployment
    Deploys `config` unless exactly this config is already deployed under its stackName, so
    tests share deploys; a changed config for the same stackName is an update (a new deploy).
    `deployed_stack(default_config())` is what `make demo` deploys (cdk.json).

``Deployment``: .raw (the config dict), .config (validated KitConfig), .stack_name,
    .config_file, .assembly (cloud assembly dir), .outputs (stacks.outputs.StackOutputs),
    .verification (kit.sandbox.verify.Verification made right after the deploy: .problems,
    .by_area), .cdk_output (the CLI's text; do not assert on it, check resources with boto3).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from kit.sandbox import REGION, cdk
from kit.sandbox.lifecycle import Sandbox, ServerInfo
from kit.sandbox.verify import Clients, Expected, Verification, describe_stack, expected_for, verify_deployment
from stacks.app_builder import load_config
from stacks.config import KitConfig
from stacks.outputs import StackOutputs


@dataclass
class Deployment:
    raw: dict[str, Any]
    config: Any  # stacks.config.KitConfig
    stack_name: str
    config_file: Path
    assembly: Path
    outputs: StackOutputs
    verification: Verification
    expected: Expected
    cdk_output: str


@dataclass
class SandboxSession:
    sandbox: Sandbox
    info: ServerInfo
    env: dict[str, str]
    bootstrapped: set[str] = field(default_factory=set)
    deployed: dict[str, Deployment] = field(default_factory=dict)
    _count: int = 0

    @property
    def endpoint(self) -> str:
        return self.info.endpoint

    @property
    def region(self) -> str:
        return self.sandbox.region

    @property
    def state_dir(self) -> Path:
        return self.sandbox.state_dir

    def client(self, service: str, region: str | None = None) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region or self.region,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def clients(self, region: str | None = None) -> Clients:
        return Clients(self.client("cloudformation", region), self.client("ec2", region), self.client("batch", region))

    def bootstrap(self, region: str) -> None:
        if region not in self.bootstrapped:
            cdk.bootstrap(self.env, self.state_dir / f"bootstrap-{region}", region)
            self.bootstrapped.add(region)

    def deploy(self, raw: dict[str, Any]) -> Deployment:
        self._count += 1
        config, _ = load_config(None, {"multinode": raw}, self.env)
        self.bootstrap(config.region)
        config_file = self.state_dir / "configs" / f"{config.stack_name}-{self._count}.json"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(raw, indent=2), encoding="utf-8")
        assembly = self.state_dir / f"cdk.out-{config.stack_name}-{self._count}"
        text = cdk.deploy(self.env, assembly, config_file)
        expected = expected_for(config)
        verification = verify_deployment(self.clients(config.region), expected)
        assert verification.outputs is not None, f"{config.stack_name}: {verification.problems}"
        deployment = Deployment(
            raw=copy.deepcopy(raw),
            config=config,
            stack_name=config.stack_name,
            config_file=config_file,
            assembly=assembly,
            outputs=verification.outputs,
            verification=verification,
            expected=expected,
            cdk_output=text,
        )
        self.deployed[config.stack_name] = deployment
        return deployment

    def destroy(self, deployment: Deployment) -> None:
        cdk.destroy(self.env, deployment.assembly)
        self.deployed.pop(deployment.stack_name, None)
        stack = describe_stack(self.client("cloudformation", deployment.config.region), deployment.stack_name)
        assert stack is None or stack["StackStatus"] == "DELETE_COMPLETE", stack

    def reset(self) -> None:
        self.sandbox.reset()
        self.bootstrapped.clear()
        self.deployed.clear()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxSession]:
    box = Sandbox(tmp_path_factory.mktemp("sandbox"), region=REGION)
    info, _ = box.up()
    try:
        session = SandboxSession(sandbox=box, info=info, env=box.process_env(info))
        session.bootstrap(REGION)
        yield session
    finally:
        box.down()


@pytest.fixture(scope="session")
def deployed_stack(sandbox: SandboxSession) -> Callable[[dict[str, Any]], Deployment]:
    def get(raw: dict[str, Any]) -> Deployment:
        name = raw.get("stackName", KitConfig.stack_name)
        current = sandbox.deployed.get(name)
        if current is not None and current.raw == raw:
            return current
        return sandbox.deploy(raw)

    return get
