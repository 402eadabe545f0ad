"""`python -m kit sandbox up|status|down` as a user runs it: a detached emulator on a free port,
an env file that points the AWS SDKs at it, `up` twice reuses it, a busy port and bad options
give one-line errors, `down` stops it and removes its state. Uses an emulator of its own (not the
session's), in a tmp state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kit.sandbox.lifecycle import PROJECT_DIR, Sandbox

pytestmark = pytest.mark.sandbox


def kit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kit", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    Sandbox(path).down()  # whatever a failed test left running


def test_up_status_down(state_dir: Path, tmp_path: Path) -> None:
    first = kit("sandbox", "up", "--state-dir", str(state_dir))
    assert first.returncode == 0, first.stderr
    assert "sandbox started" in first.stdout
    info = Sandbox(state_dir).running()
    assert info is not None and info.host == "127.0.0.1"

    env_text = (state_dir / "env").read_text()
    for line in (
        f"export AWS_ENDPOINT_URL=http://127.0.0.1:{info.port}",
        f"export AWS_ENDPOINT_URL_S3_FOR_CLOUDFORMATION=http://localhost:{info.port}",
        "export AWS_EC2_METADATA_DISABLED=true",
        "export CDK_DISABLE_CLI_TELEMETRY=true",
        f"export CDK_HOME={state_dir / 'cdk-home'}",
        "export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20",
    ):
        assert line in env_text.splitlines()
    # Sourcing the env file is all an SDK needs (here boto3 from a clean shell).
    probe = "import boto3; print(boto3.client('sts').get_caller_identity()['Account'])"
    shell = subprocess.run(
        ["bash", "-c", f'source "{state_dir / "env"}" && "{sys.executable}" -c "{probe}"'],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shell.stdout.strip() == "123456789012", shell.stderr

    again = kit("sandbox", "up", "--state-dir", str(state_dir))
    assert again.returncode == 0 and "already running (reused)" in again.stdout
    assert Sandbox(state_dir).running() == info

    status = kit("sandbox", "status", "--state-dir", str(state_dir))
    assert status.returncode == 0 and f"http://127.0.0.1:{info.port}" in status.stdout

    down = kit("sandbox", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0 and "sandbox stopped" in down.stdout
    assert not state_dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(info.pid, 0)
    after = kit("sandbox", "status", "--state-dir", str(state_dir))
    assert after.returncode == 1 and "not running" in after.stdout


def test_busy_port_is_one_clear_error(state_dir: Path, tmp_path: Path) -> None:
    assert kit("sandbox", "up", "--state-dir", str(state_dir)).returncode == 0
    info = Sandbox(state_dir).running()
    assert info is not None
    other = tmp_path / "other"
    clash = kit("sandbox", "up", "--state-dir", str(other), "--port", str(info.port))
    assert clash.returncode == 1
    assert clash.stderr.strip().splitlines() == [
        f"error: the emulator exited (code 4): cannot listen on 127.0.0.1:{info.port}: "
        "the port is in use or not allowed"
    ]
    assert Sandbox(other).running() is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sandbox", "up", "--port", "70000"], "error: --port must be between 1 and 65535"),
        (["sandbox", "start"], "invalid choice: 'start' (choose from 'up', 'down', 'status', 'reset')"),
    ],
)
def test_bad_usage(args: list[str], message: str) -> None:
    done = kit(*args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
