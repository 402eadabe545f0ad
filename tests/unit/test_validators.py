"""The config rules of stacks/validators.py, in-process and table-driven.

Every invalid case of invalid_configs.INVALID must report exactly its listed key paths as
errors (so a case breaks one rule and nothing else fires by accident); warning cases must
report their warnings and no error; the sample configs and the inline valid ones must pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stacks.catalog import load_catalog
from stacks.config import Finding, KitConfig, QueueConfig
from stacks.validators import (
    CHECKS,
    MAX_QUEUES,
    efa_limit,
    known_regions,
    queue_efa_interfaces,
    queue_nodes,
    validate,
)
from tests.unit.invalid_configs import INVALID, VALID, WARNINGS, Case, queue

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CONFIGS = sorted((ROOT / "tests" / "configs").glob("*.json"))


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]


def warnings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "warning"]


def test_table_is_large_and_ids_are_unique() -> None:
    single = [c for c in INVALID if len(c.errors) == 1]
    assert len(single) >= 30
    assert sum(len(c.errors) > 1 for c in INVALID) >= 3
    ids = [c.id for c in INVALID + WARNINGS + VALID]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_config_reports_exactly_its_error_paths(case: Case) -> None:
    cfg, findings = validate(case.config, {})
    assert cfg is None
    found = sorted(f.path for f in errors(findings))
    assert found == sorted(case.errors), "\n".join(map(str, findings))
    for f in errors(findings):
        # Each message says what is wrong and, after the path, gives something to do.
        assert len(f.message) > 15 and f.path not in ("", None)


@pytest.mark.parametrize("case", WARNINGS, ids=lambda c: c.id)
def test_warning_case_is_deployable_and_explains_itself(case: Case) -> None:
    cfg, findings = validate(case.config, {})
    assert errors(findings) == [], "\n".join(map(str, findings))
    assert cfg is not None
    assert sorted(f.path for f in warnings(findings)) == sorted(case.warnings), "\n".join(map(str, findings))
    text = "\n".join(f.message for f in warnings(findings))
    for words in case.contains:
        assert words in text


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_inline_config_passes_without_findings(case: Case) -> None:
    cfg, findings = validate(case.config, {})
    assert findings == []
    assert isinstance(cfg, KitConfig)


def _sample(path: Path) -> Any:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", SAMPLE_CONFIGS, ids=lambda p: p.stem)
def test_sample_configs_have_no_errors(path: Path) -> None:
    cfg, findings = validate(_sample(path), {})
    assert errors(findings) == []
    assert cfg is not None


def test_default_cdk_json_config_has_no_findings() -> None:
    raw = json.loads((ROOT / "cdk.json").read_text())["context"]["multinode"]
    cfg, findings = validate(raw, {})
    assert findings == []
    assert cfg is not None and cfg.queues[0].instance_type == "p5.48xlarge"


def test_sample_configs_cover_p4d_imported_vpc_and_two_queues() -> None:
    stems = {p.stem for p in SAMPLE_CONFIGS}
    assert {"p4d", "imported-vpc", "two-queues"} <= stems


# --- specific messages --------------------------------------------------------------------


def _messages(raw: Any, path: str) -> str:
    _, findings = validate(raw, {})
    return "\n".join(f.message for f in findings if f.path == path)


def test_unknown_key_suggests_the_right_spelling() -> None:
    raw = queue(rootVolumeGib=300)
    assert "did you mean 'rootVolumeGiB'" in _messages(raw, "queues[0].rootVolumeGib")


def test_unknown_instance_type_suggests_close_names() -> None:
    assert "p5.48xlarge" in _messages(queue(instanceType="p5.48xl"), "queues[0].instanceType")


def test_type_without_efa_names_the_efa_sizes_of_its_family() -> None:
    text = _messages(queue(instanceType="g6e.xlarge"), "queues[0].instanceType")
    assert "g6e.48xlarge" in text and "g6e.xlarge" not in text.split("EFA sizes")[1]


def test_efa_range_message_gives_the_valid_range() -> None:
    assert "use 1 to 4" in _messages(queue(efaInterfaces=5), "queues[0].efaInterfaces")


def test_subnet_message_gives_the_address_count() -> None:
    raw = queue({"network": {"vpcCidr": "10.40.0.0/23"}}, maxNodes=200)
    # p4d: primary ENA interface + the container's ENI = 2 addresses per node; a /23 leaves a /24.
    text = _messages(raw, "network.vpcCidr")
    assert "400 addresses" in text and "train: 200 nodes x 2" in text and "251 usable" in text


def test_largest_private_subnet_fits_exactly() -> None:
    # /23 VPC: a /24 private subnet holds 251 addresses; 123 p4d nodes take 246, 124 take 248, 126 take 252.
    ok = queue({"network": {"vpcCidr": "10.40.0.0/23"}}, maxNodes=123)
    too_many = queue({"network": {"vpcCidr": "10.40.0.0/23"}}, maxNodes=126)
    assert errors(validate(ok, {})[1]) == []
    assert {f.path for f in errors(validate(too_many, {})[1])} == {"network.vpcCidr"}


def test_ssh_host_bits_message_suggests_the_network() -> None:
    text = _messages(queue({"network": {"sshSources": ["203.0.113.7/24"]}}), "network.sshSources[0]")
    assert '"203.0.113.0/24"' in text


def test_too_many_queues_names_the_limit() -> None:
    assert MAX_QUEUES == 19
    from tests.unit.invalid_configs import IMPORTED, q, queues

    ok = queues(*(q(f"q{i}") for i in range(MAX_QUEUES)), net=IMPORTED)
    assert errors(validate(ok, {})[1]) == []


# --- behaviour of the validator set -------------------------------------------------------


def test_region_defaults_from_the_environment_with_a_warning() -> None:
    raw = queue({"region": None})
    cfg, findings = validate(raw, {"CDK_DEFAULT_REGION": "us-east-1"})
    assert cfg is not None and cfg.region == "us-east-1"
    assert [f.path for f in findings if f.level == "warning" and "CDK_DEFAULT_REGION" in f.message] == ["region"]
    # Without the variable the region is required.
    cfg, findings = validate(raw, {})
    assert cfg is None and [f.path for f in errors(findings)] == ["region"]


def test_az_must_match_a_region_taken_from_the_environment() -> None:
    raw = queue({"region": None})
    cfg, findings = validate(raw, {"CDK_DEFAULT_REGION": "eu-west-1"})
    assert cfg is None and [f.path for f in errors(findings)] == ["availabilityZone"]


def test_account_defaults_from_the_environment() -> None:
    cfg, _ = validate(queue(), {"CDK_DEFAULT_ACCOUNT": "123456789012"})
    assert cfg is not None and cfg.account == "123456789012"


def test_known_regions_come_from_botocore_data() -> None:
    regions = known_regions()
    assert {"us-east-1", "eu-west-1", "us-gov-west-1", "cn-north-1"} <= regions
    assert not any(r.endswith("-global") for r in regions)


def test_parse_error_is_not_repeated_by_validators() -> None:
    # maxNodes "4" becomes a placeholder 0; "below 2" must not be reported on top of the type error.
    _, findings = validate(queue(maxNodes="4"), {})
    assert len([f for f in findings if f.path == "queues[0].maxNodes"]) == 1


def test_findings_are_in_reading_order() -> None:
    raw = queue({"region": "us-eats-1", "tags": {"aws:x": "y"}}, maxNodes=1)
    paths = [f.path for f in validate(raw, {})[1]]
    assert paths == ["region", "queues[0].maxNodes", "tags.aws:x"]


def test_every_check_is_a_pure_function_of_config_and_catalog() -> None:
    cfg, _ = validate(queue(minNodes=1, efaInterfaces=2), {})
    assert cfg is not None
    catalog = load_catalog()
    for check in CHECKS:
        first, second = check(cfg, catalog), check(cfg, catalog)
        assert first == second and all(isinstance(f, Finding) and f.path for f in first)


def test_efa_limit_is_the_smaller_of_type_maximum_and_efa_cards() -> None:
    catalog = load_catalog()
    facts = catalog.get("i7ie.48xlarge")
    assert facts is not None and facts.max_efa_interfaces == 1 and efa_limit(facts) == 1
    p5 = catalog.get("p5.48xlarge")
    assert p5 is not None and efa_limit(p5) == 32


def test_queue_checks_run_on_a_hand_made_queue() -> None:
    catalog = load_catalog()
    qc = QueueConfig(name="x", instance_type="p4d.24xlarge", max_nodes=4, min_nodes=2, efa_interfaces=3)
    assert [f.path for f in queue_efa_interfaces("queues[7]", qc, catalog)] == ["queues[7].efaInterfaces"]
    assert [(f.level, f.path) for f in queue_nodes("queues[7]", qc, catalog)] == [("warning", "queues[7].minNodes")]
