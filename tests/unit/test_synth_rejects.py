"""`cdk synth` runs the same validation as `python -m kit validate`.

Through the real CLI (`npx cdk synth -c config=FILE -o <tmp>` from the project directory):
a sample of the invalid table fails with every key path in the output, no traceback and no
template written; a warnings-only config synthesizes and prints its warnings. In-process:
the warnings become CDK warning annotations on the stack, and load_config raises with
every error at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from stacks.config import ConfigError
from tests.unit.invalid_configs import INVALID, WARNINGS, Case, queue

ROOT = Path(__file__).resolve().parents[2]
# One case per kind of rule: a shape error, a catalog rule, a cross-field rule, several at once.
SYNTH_SAMPLE = (
    "maxNodes-as-string",
    "instance-type-without-efa",
    "private-subnet-cannot-hold-max-nodes",
    "several-mistakes",
)

pytestmark = pytest.mark.skipif(shutil.which("npx") is None, reason="needs node/npx for the cdk CLI")


def cdk_synth(config: Any, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    out = tmp_path / "cdk.out"
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "AWS_EC2_METADATA_DISABLED": "true",
        "CDK_HOME": str(tmp_path / "cdk-home"),
    }
    result = subprocess.run(
        ["npx", "cdk", "synth", "-c", f"config={config_file}", "-o", str(out), "--quiet", "--no-notices"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result, out


def _case(case_id: str) -> Case:
    return next(c for c in INVALID + WARNINGS if c.id == case_id)


@pytest.mark.parametrize("case_id", SYNTH_SAMPLE)
def test_cdk_synth_rejects_invalid_config(tmp_path: Path, case_id: str) -> None:
    case = _case(case_id)
    result, out = cdk_synth(case.config, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert "The kit's config has errors; nothing was synthesized" in output
    for path in case.errors:
        assert f"ERROR: {path}: " in output, output
    assert list(out.glob("**/*.template.json")) == []


def test_cdk_synth_of_warnings_only_config_writes_template_and_prints_warnings(tmp_path: Path) -> None:
    raw = queue(minNodes=1, efaInterfaces=2)
    result, out = cdk_synth(raw, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "WARNING: queues[0].minNodes: " in output and "WARNING: queues[0].efaInterfaces: " in output
    templates = list(out.glob("*.template.json"))
    assert len(templates) == 1
    compute = [
        r
        for r in json.loads(templates[0].read_text())["Resources"].values()
        if r["Type"] == "AWS::Batch::ComputeEnvironment"
    ]
    # minNodes 1 x 96 vCPUs of p4d.24xlarge reached the template, so the warned config is the one built.
    assert compute[0]["Properties"]["ComputeResources"]["MinvCpus"] == 96


def test_warnings_become_cdk_annotations(tmp_path: Path) -> None:
    from aws_cdk import App
    from aws_cdk.assertions import Annotations, Match

    from stacks.app_builder import build_app, load_config

    config, warnings = load_config(None, {"multinode": queue(minNodes=1, efaInterfaces=2)}, {})
    assert sorted(w.path for w in warnings) == ["queues[0].efaInterfaces", "queues[0].minNodes"]
    _, stack = build_app(config, warnings, App(outdir=str(tmp_path / "out")))
    annotations = Annotations.from_stack(stack)
    for w in warnings:
        annotations.has_warning("/Multinode", Match.string_like_regexp(f"^{re.escape(w.path)}: "))
    found = annotations.find_warning("*", Match.string_like_regexp("queues"))
    assert len(found) == 2


def test_load_config_raises_with_every_error_at_once() -> None:
    from stacks.app_builder import load_config

    case = _case("several-mistakes")
    with pytest.raises(ConfigError) as info:
        load_config(None, {"multinode": case.config}, {})
    assert sorted(f.path for f in info.value.findings if f.level == "error") == sorted(case.errors)
