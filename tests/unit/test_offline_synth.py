"""`cdk synth` needs no AWS credentials and no network: run the real pinned CLI inside a new
network namespace (no interface but a down loopback) with every AWS credential variable removed,
and expect the template."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _can_unshare_network() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    return subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare_network(), reason="needs `unshare -n` (root or user namespaces)")
def test_synth_runs_without_network_or_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    env.update(
        HOME=str(tmp_path / "home"),  # no ~/.aws, no cached CDK settings
        AWS_EC2_METADATA_DISABLED="true",
        CDK_DISABLE_CLI_TELEMETRY="true",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
    )
    out = tmp_path / "cdk.out"
    proc = subprocess.run(
        ["unshare", "-n", str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--quiet", "-o", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    template = json.loads((out / "Multinode.template.json").read_text())
    assert any(r["Type"] == "AWS::Batch::JobQueue" for r in template["Resources"].values())
    assert "missing" not in json.loads((out / "manifest.json").read_text())
