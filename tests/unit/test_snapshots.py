"""Whole-template snapshots (syrupy) for the p4d and p5 configs, with CDK's hashed
logical-id suffixes normalized, plus cfn-lint over every synthesized template.

Update snapshots after an intended change with `pytest --snapshot-update` and review the diff.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

HASH_SUFFIX = re.compile(r"^(?P<stem>[A-Za-z0-9]+?)(?P<hash>[0-9A-F]{8})$")


def normalize(template: dict[str, Any]) -> dict[str, Any]:
    """Replace each logical id's 8-hex hash with a stable placeholder; drop CDK's analytics."""
    template = json.loads(json.dumps(template))
    template["Resources"].pop("CDKMetadata", None)
    template.get("Conditions", {}).pop("CDKMetadataAvailable", None)
    renames = {}
    for logical_id in template["Resources"]:
        match = HASH_SUFFIX.match(logical_id)
        if match:
            renames[logical_id] = f"{match['stem']}#hash"
    assert len(set(renames.values())) == len(renames), "normalization would merge two resources"
    text = json.dumps(template, sort_keys=True)
    for old in sorted(renames, key=len, reverse=True):
        text = re.sub(rf'(?<=")({re.escape(old)})(?=")', renames[old], text)
    normalized: dict[str, Any] = json.loads(text)
    return normalized


@pytest.fixture
def json_snapshot(snapshot):  # type: ignore[no-untyped-def]
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("name", ["p4d", "p5"])
def test_full_template_snapshot(synth, json_snapshot, name):
    assert normalize(synth.get(name).template_json) == json_snapshot


def test_p5_snapshot_has_32_efa_interfaces_on_32_cards(synth):
    data = next(
        r
        for r in normalize(synth.get("p5").template_json)["Resources"].values()
        if r["Type"] == "AWS::EC2::LaunchTemplate"
    )["Properties"]["LaunchTemplateData"]
    efa = [n for n in data["NetworkInterfaces"] if n["InterfaceType"] in ("efa", "efa-only")]
    assert len(efa) == 32 and len({n["NetworkCardIndex"] for n in efa}) == 32


@pytest.mark.parametrize("name", ["default", "p5", "p4d", "imported-vpc", "two-queues", "capacity"])
def test_cfn_lint_finds_no_error(synth, name):
    from cfnlint.api import lint_all

    matches = lint_all(json.dumps(synth.get(name).template_json))
    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches if m.rule.severity == "error"]
    assert errors == []
    # Warnings are reported but do not fail; keep them visible in the test log.
    for m in matches:
        if m.rule.severity == "warning":
            print(f"cfn-lint warning: {m.rule.id} {m.message}")
