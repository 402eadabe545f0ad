"""`python -m kit demo` (what `make demo` runs) end to end, twice: it deploys cdk.json's config into
the sandbox, verifies it and prints outputs, location and how to stop; the second run reuses
the emulator and the bootstrap and changes nothing. It runs against the session's emulator (its
state directory), so it shares that emulator's bootstrap."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kit.sandbox.lifecycle import PROJECT_DIR
from kit.sandbox.verify import describe_stack, expected_for, verify_deployment
from stacks.app_builder import load_config
from tests.conftest import default_config
from tests.sandbox.conftest import SandboxSession

pytestmark = pytest.mark.sandbox


def run_demo(sandbox: SandboxSession) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kit", "demo", "--quiet", "--state-dir", str(sandbox.state_dir)],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_demo_deploys_verifies_and_is_idempotent(sandbox: SandboxSession) -> None:
    config, _ = load_config(None, {"multinode": default_config()}, sandbox.env)
    first = run_demo(sandbox)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"reused {sandbox.endpoint}" in first.stdout  # the session's emulator, not a new one
    assert "every resource checked with boto3" in first.stdout
    for expected in ("QueueNames", "TrainJobQueueArn", "stop:      python -m kit sandbox down --state-dir"):
        assert expected in first.stdout
    # The demo's word is not taken: check the stack ourselves.
    cfn = sandbox.client("cloudformation")
    stack = describe_stack(cfn, config.stack_name)
    assert stack is not None and stack["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    assert verify_deployment(sandbox.clients(), expected_for(config)).problems == []
    # metaflow-config wrote the profile into the sandbox's own METAFLOW_HOME, pointing at the queue.
    profile = sandbox.state_dir / "metaflow" / f"config_{config.metaflow.profile}.json"
    written = json.loads(profile.read_text())
    queue_name = next(o["OutputValue"] for o in stack["Outputs"] if o["OutputKey"] == "TrainJobQueueName")
    assert written["METAFLOW_BATCH_JOB_QUEUE"] == queue_name
    # doctor ran against it and found no FAIL (the demo stops on one).
    assert "doctor:" in first.stdout and "(no FAIL)" in first.stdout

    second = run_demo(sandbox)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already bootstrapped" in second.stdout
    again = describe_stack(cfn, config.stack_name)
    assert again is not None
    assert (again["StackId"], again["StackStatus"], again.get("LastUpdatedTime")) == (
        stack["StackId"],
        stack["StackStatus"],
        stack.get("LastUpdatedTime"),
    )
