"""stacks/config.py: parsing into the frozen model, reading config files, and the promise
that no JSON input makes parsing (or the validators after it) raise."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from stacks.config import (
    Finding,
    KitConfig,
    QueueConfig,
    parse_config,
    read_cdk_json_config,
    read_raw_config,
)
from stacks.validators import validate
from tests.unit.invalid_configs import BASE, IMPORTED, queue

ROOT = Path(__file__).resolve().parents[2]


def test_full_config_parses_into_the_model() -> None:
    raw = {
        "stackName": "mn",
        "region": "us-west-2",
        "account": "123456789012",
        "availabilityZone": "us-west-2b",
        "network": {**IMPORTED, "sshSources": ["203.0.113.0/24"], "allowSshFromAnywhere": False},
        "queues": [
            {
                "name": "a100",
                "instanceType": "p4d.24xlarge",
                "maxNodes": 8,
                "minNodes": 1,
                "efaInterfaces": 2,
                "rootVolumeGiB": 300,
                "imageId": "ami-0abc1234def567890",
                "capacityWaitMinutes": 30,
            }
        ],
        "metaflow": {"s3AccessRoleArn": "arn:aws:iam::123456789012:role/x", "profile": "p"},
        "tags": {"b": "2", "a": "1"},
    }
    cfg, findings = parse_config(raw)
    assert findings == []
    assert cfg.network.vpc_id == IMPORTED["vpcId"] and cfg.network.subnet_ids == tuple(IMPORTED["subnetIds"])
    assert cfg.queues == (QueueConfig("a100", "p4d.24xlarge", 8, 1, 2, 300, "ami-0abc1234def567890", 30),)
    assert cfg.tags == (("a", "1"), ("b", "2"))
    assert not cfg.creates_vpc and cfg.metaflow.profile == "p"


def test_defaults_fill_optional_fields() -> None:
    cfg, findings = parse_config(BASE)
    assert findings == []
    q = cfg.queues[0]
    assert (q.min_nodes, q.efa_interfaces, q.root_volume_gib, q.capacity_wait_minutes) == (0, "max", 200, 60)
    assert cfg.creates_vpc and cfg.network.vpc_cidr == "10.40.0.0/16" and cfg.stack_name == "metaflow-multinode"


def test_null_sections_mean_defaults() -> None:
    cfg, findings = parse_config({**BASE, "network": None, "metaflow": None, "tags": None, "account": None})
    assert findings == [] and cfg.network.ssh_sources == () and cfg.account is None


def test_model_is_frozen() -> None:
    cfg, _ = parse_config(BASE)
    with pytest.raises(AttributeError):
        cfg.region = "eu-west-1"  # type: ignore[misc]


def test_bad_queue_keeps_its_index_for_later_queues() -> None:
    raw = {**BASE, "queues": [None, {"name": "b", "instanceType": "nope", "maxNodes": 2}]}
    _, findings = validate(raw, {})
    paths = [f.path for f in findings if f.level == "error"]
    assert paths == ["queues[0]", "queues[1].instanceType"]


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    _, findings = parse_config(queue(zzz=1))
    assert [f.path for f in findings] == ["queues[0].zzz"]
    assert "instanceType" in findings[0].message and "maxNodes" in findings[0].message


def test_unknown_key_differing_in_case_is_matched() -> None:
    _, findings = parse_config({**BASE, "AVAILABILITYZONE": "x"})
    assert "did you mean 'availabilityZone'" in findings[0].message


@pytest.mark.parametrize(
    ("value", "shown"),
    [("4", 'str "4"'), (True, "true"), (4.0, "float 4.0"), (None, None), ([4], "a list"), ({"n": 4}, "an object")],
)
def test_type_errors_say_what_was_found(value: Any, shown: str | None) -> None:
    _, findings = parse_config(queue(minNodes=value))
    if shown is None:  # null means "use the default"
        assert findings == []
    else:
        assert [str(f) for f in findings] == [f"ERROR: queues[0].minNodes: must be an integer, got {shown}"]


def test_long_strings_are_shortened_in_messages() -> None:
    _, findings = parse_config(queue(maxNodes="x" * 500))
    assert len(findings[0].message) < 120


def test_vpc_cidr_with_vpc_id_is_a_warning() -> None:
    _, findings = parse_config({**BASE, "network": {**IMPORTED, "vpcCidr": "10.0.0.0/16"}})
    assert [(f.level, f.path) for f in findings] == [("warning", "network.vpcCidr")]


def test_finding_str_names_level_and_path() -> None:
    assert str(Finding("error", "queues[1].instanceType", "bad")) == "ERROR: queues[1].instanceType: bad"


# --- reading files ------------------------------------------------------------------------


def test_read_raw_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(BASE))
    assert read_raw_config(str(path), None) == (BASE, [])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "not found"),
        (b'{"region": ', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"maxNodes": ' + b"9" * 5000 + b"}", "cannot be parsed"),
        (b"[" * 100_000 + b"]" * 100_000, "cannot be parsed"),
    ],
    ids=["missing", "truncated", "binary", "huge-int", "deep-nesting"],
)
def test_unreadable_files_give_one_finding(tmp_path: Path, content: bytes | None, words: str) -> None:
    path = tmp_path / "c.json"
    if content is not None:
        path.write_bytes(content)
    raw, findings = read_raw_config(str(path), None)
    assert raw is None and len(findings) == 1
    assert findings[0].path == "config" and words in findings[0].message


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    _, findings = read_raw_config(str(tmp_path), None)
    assert "directory" in findings[0].message


def test_missing_context_says_where_a_config_goes() -> None:
    for context in (None, {}, {"multinode": None}):
        raw, findings = read_raw_config(None, context)
        assert raw is None and findings[0].path == "multinode" and "cdk.json" in findings[0].message


def test_cdk_json_config_is_the_multinode_context() -> None:
    raw, findings = read_cdk_json_config(ROOT)
    assert findings == []
    assert raw == json.loads((ROOT / "cdk.json").read_text())["context"]["multinode"]


@pytest.mark.parametrize("content", ["[]", '{"context": []}', '{"context": {"other": 1}}', "{"])
def test_cdk_json_without_usable_context(tmp_path: Path, content: str) -> None:
    (tmp_path / "cdk.json").write_text(content)
    raw, findings = read_cdk_json_config(tmp_path)
    assert raw is None and len(findings) == 1 and findings[0].level == "error"


# --- never raise --------------------------------------------------------------------------

ODD_INPUTS: list[Any] = [
    None,
    [],
    [BASE],
    "us-east-1",
    0,
    -1.5,
    True,
    float("nan"),
    {},
    {"queues": None},
    {"queues": {}},
    {"queues": [[]]},
    {"queues": [{"name": ["x"], "instanceType": {"a": 1}, "maxNodes": {"n": 2}}]},
    {"queues": [{"efaInterfaces": "MAX"}, {"efaInterfaces": -3}, {"efaInterfaces": 10**300}]},
    {**BASE, "queues": [{**BASE["queues"][0], "maxNodes": 10**4000}]},
    {**BASE, "queues": [{**BASE["queues"][0], "maxNodes": float("inf")}]},
    {**BASE, "network": {"sshSources": [None, 1, "", "sg-", "::", "/", "1.2.3.4/-1"]}},
    {**BASE, "network": {"vpcCidr": "", "subnetIds": [[]]}},
    {**BASE, "network": "10.0.0.0/16"},
    {**BASE, "tags": {"": "", "k" * 200: "v" * 300}},
    {**BASE, "region": "", "availabilityZone": ""},
    {**BASE, "region": "us-east-1", "availabilityZone": "us-east-1" + "a" * 1000},
    {**BASE, "metaflow": []},
    {"region": {"nested": [{"garbage": [None, {"x": []}]}]}},
]


@pytest.mark.parametrize("raw", ODD_INPUTS, ids=[f"odd{i}" for i in range(len(ODD_INPUTS))])
def test_odd_input_never_raises(raw: Any) -> None:
    cfg, _ = parse_config(raw)
    assert isinstance(cfg, KitConfig)
    model, all_findings = validate(raw, {})
    assert all(isinstance(f, Finding) and f.path for f in all_findings)
    assert (model is None) == any(f.level == "error" for f in all_findings)


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["null", "bool", "int", "float", "str", "numstr"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, 1, 2, -1, 32, 10**12, rng.randint(-100, 100)])
    if kind == "float":
        return rng.choice([0.5, -2.0, 1e308, 2.0])
    if kind == "str":
        return rng.choice(["", "max", "p5.48xlarge", "us-east-1", "0.0.0.0/0", "sg-1", "ü", "vpc-0a1b2c3d"])
    if kind == "numstr":
        return str(rng.randint(0, 64))
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["name", "maxNodes", "queues", "network", "region", "x", "efaInterfaces", "sshSources", "tags"]
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _mutate(rng: random.Random, node: Any) -> Any:
    """Replace one random leaf or key of a copy of `node` with random JSON."""
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        if rng.random() < 0.3:
            return _random_json(rng)
        node[key] = _mutate(rng, node[key])
        return node
    if isinstance(node, list) and node:
        i = rng.randrange(len(node))
        node[i] = _mutate(rng, node[i])
        return node
    return _random_json(rng)


def test_fuzzed_configs_never_raise() -> None:
    rng = random.Random(20261123)
    seeds = [BASE, queue({"network": IMPORTED}, minNodes=1, efaInterfaces=2)]
    for i in range(1500):
        raw = _random_json(rng) if i % 5 == 0 else _mutate(rng, copy.deepcopy(rng.choice(seeds)))
        model, findings = validate(raw, {})
        assert (model is None) == any(f.level == "error" for f in findings), raw
        assert all(f.path for f in findings), raw
