"""`python -m kit metaflow-config`: the profile merge, the printed decorator values and the error paths.

The AWS side is moto in-process (`mock_aws`) with a real CloudFormation stack whose outputs carry the
kit's output names (stacks/outputs.py); every boto3 call is real. METAFLOW_HOME is a tmp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kit import cli
from kit import metaflow_config as mc
from stacks import outputs as out
from stacks.catalog import load_catalog
from stacks.plan import pascal
from tests.conftest import isolate_aws_env, kit_outputs_template

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
STACK = "MetaflowMultinode"
ROLE_ARN = "arn:aws:iam::123456789012:role/metaflow-task"

# name -> (instance type, EFA interfaces, GPUs per node, max nodes)
QUEUES = {"train": ("p5.48xlarge", 32, 8, 4), "eval-small": ("p4d.24xlarge", 4, 8, 2)}


def job_queue_name(queue: str) -> str:
    return f"{pascal(queue)}JobQueue-ABC123"


def kit_template(
    queues: dict[str, tuple[str, int, int, int]] = QUEUES,
    profile: str = "multinode",
    s3_role: str | None = ROLE_ARN,
    drop: str | None = None,
) -> str:
    """The kit's outputs for `queues` in a tiny real template (tests/conftest.py)."""
    return kit_outputs_template(
        queues,
        queue_arn=lambda name: f"arn:aws:batch:{REGION}:123456789012:job-queue/{job_queue_name(name)}",
        region=REGION,
        profile=profile,
        s3_role=s3_role,
        drop=drop,
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh METAFLOW_HOME and fake AWS credentials that only moto accepts."""
    mf_home = tmp_path / "metaflowconfig"
    mf_home.mkdir()
    monkeypatch.setenv("METAFLOW_HOME", str(mf_home))
    isolate_aws_env(monkeypatch, tmp_path, REGION)
    return mf_home


@pytest.fixture
def cfn(home: Path) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudformation", region_name=REGION)


@pytest.fixture
def stack(cfn: Any) -> str:
    cfn.create_stack(StackName=STACK, TemplateBody=kit_template())
    return STACK


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Through the real dispatcher, as `python -m kit metaflow-config ...` runs it."""
    rc = cli.main(["metaflow-config", *argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def write_json(path: Path, data: dict[str, Any]) -> str:
    text = json.dumps(data, indent=4, sort_keys=True) + "\n"
    path.write_text(text)
    return text


def backups(home: Path) -> list[Path]:
    return sorted(home.glob("*.bak"))


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# --- merge ---------------------------------------------------------------------------------------


def test_new_profile_takes_base_keys_and_stack_values(
    stack: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": "s3://bucket/metaflow",
        "METAFLOW_BATCH_JOB_QUEUE": "some-other-queue",
    }
    write_json(home / "config.json", base)

    rc, stdout, _ = run(capsys, "--stack", stack)

    assert rc == 0
    written = json.loads((home / "config_multinode.json").read_text())
    assert written == {
        **base,
        "METAFLOW_BATCH_JOB_QUEUE": job_queue_name("train"),
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": ROLE_ARN,
    }
    assert json.loads((home / "config.json").read_text()) == base  # the base is only read
    assert backups(home) == []  # nothing existed to back up
    assert oct((home / "config_multinode.json").stat().st_mode & 0o777) == "0o600"
    assert "export METAFLOW_PROFILE=multinode" in stdout
    for name, (_, efa, gpus, max_nodes) in QUEUES.items():
        assert f'@batch(queue="{job_queue_name(name)}", gpu={gpus}, efa={efa}, cpu=' in stdout
        assert f"num_parallel={max_nodes})" in stdout
    assert "@parallel" in stdout


def test_precedence_base_then_target_then_kit_and_one_backup(
    stack: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_json(
        home / "config.json",
        {"A_BASE_ONLY": "base", "B_BOTH": "base", "METAFLOW_BATCH_JOB_QUEUE": "base-queue"},
    )
    target = home / "config_multinode.json"
    old_text = write_json(
        target, {"B_BOTH": "target", "C_TARGET_ONLY": "target", "METAFLOW_BATCH_JOB_QUEUE": "stale-queue"}
    )

    rc, stdout, _ = run(capsys, "--stack", stack)

    assert rc == 0
    assert json.loads(target.read_text()) == {
        "A_BASE_ONLY": "base",  # base fills what the target lacks
        "B_BOTH": "target",  # the user's target value beats the base
        "C_TARGET_ONLY": "target",  # unmanaged keys of the target stay
        "METAFLOW_BATCH_JOB_QUEUE": job_queue_name("train"),  # kit-managed beats both
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": ROLE_ARN,
    }
    (saved,) = backups(home)
    assert saved.read_text() == old_text
    assert saved.name.startswith("config_multinode.json.") and saved.name.endswith(".bak")
    assert f"previous version saved as {saved.name}" in stdout
    assert not list(home.glob(".*.tmp"))  # the temp file was renamed, not left behind


def test_second_run_changes_nothing_and_each_change_backs_up_once(
    stack: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = home / "config_multinode.json"
    write_json(target, {"METAFLOW_USER_KEY": "mine"})

    assert run(capsys, "--stack", stack)[0] == 0
    assert len(backups(home)) == 1
    first = target.read_bytes()
    first_mtime = target.stat().st_mtime_ns

    rc, stdout, _ = run(capsys, "--stack", stack)
    assert rc == 0
    assert "already up to date" in stdout
    assert target.read_bytes() == first
    assert target.stat().st_mtime_ns == first_mtime
    assert len(backups(home)) == 1

    # Choosing another queue is a change: exactly one more backup, then idempotent again.
    assert run(capsys, "--stack", stack, "--queue", "eval-small")[0] == 0
    assert json.loads(target.read_text())["METAFLOW_BATCH_JOB_QUEUE"] == job_queue_name("eval-small")
    assert len(backups(home)) == 2
    rc, stdout, _ = run(capsys, "--stack", stack, "--queue", "eval-small")
    assert "already up to date" in stdout
    assert len(backups(home)) == 2


def test_dry_run_prints_a_diff_and_writes_nothing(stack: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = home / "config_multinode.json"
    old_text = write_json(target, {"METAFLOW_BATCH_JOB_QUEUE": "stale-queue", "METAFLOW_USER_KEY": "mine"})
    before = sorted(p.name for p in home.iterdir())

    rc, stdout, _ = run(capsys, "--stack", stack, "--dry-run")

    assert rc == 0
    assert f"--- {target}" in stdout and f"+++ {target}" in stdout
    assert '-    "METAFLOW_BATCH_JOB_QUEUE": "stale-queue",' in stdout
    assert f'+    "METAFLOW_BATCH_JOB_QUEUE": "{job_queue_name("train")}",' in stdout
    assert f'+    "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": "{ROLE_ARN}"' in stdout
    new_side = [line[1:] for line in stdout.splitlines() if line[:1] in (" ", "+") and not line.startswith("+++")]
    assert any(line.startswith('    "METAFLOW_USER_KEY": "mine"') for line in new_side)  # kept, only re-punctuated
    assert "dry run" in stdout
    assert target.read_text() == old_text
    assert sorted(p.name for p in home.iterdir()) == before


def test_dry_run_of_a_new_profile_creates_no_directory(
    stack: str, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing_home = home / "not-yet"
    monkeypatch.setenv("METAFLOW_HOME", str(missing_home))
    rc, stdout, _ = run(capsys, "--stack", stack, "--dry-run")
    assert rc == 0
    assert "--- /dev/null" in stdout
    assert not missing_home.exists()
    # Without --dry-run the directory is created.
    assert run(capsys, "--stack", stack)[0] == 0
    assert (missing_home / "config_multinode.json").is_file()


def test_key_the_stack_no_longer_provides_is_kept(cfn: Any, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfn.create_stack(StackName=STACK, TemplateBody=kit_template(s3_role=None))
    target = home / "config_multinode.json"
    write_json(target, {"METAFLOW_ECS_S3_ACCESS_IAM_ROLE": ROLE_ARN})
    assert run(capsys, "--stack", STACK)[0] == 0
    assert json.loads(target.read_text()) == {
        "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": ROLE_ARN,
        "METAFLOW_BATCH_JOB_QUEUE": job_queue_name("train"),
    }


def test_profile_and_base_options(stack: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_json(home / "config.json", {"FROM_DEFAULT": "1"})
    write_json(home / "config_team.json", {"FROM_TEAM": "1"})

    assert run(capsys, "--stack", stack, "--profile", "gpu", "--base", "team")[0] == 0

    written = json.loads((home / "config_gpu.json").read_text())
    assert written["FROM_TEAM"] == "1"
    assert "FROM_DEFAULT" not in written
    assert not (home / "config_multinode.json").exists()


def test_symlinked_profile_stays_a_symlink(stack: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = home / "dotfiles" / "mf.json"
    real.parent.mkdir()
    write_json(real, {"METAFLOW_USER_KEY": "mine"})
    (home / "config_multinode.json").symlink_to(real)
    assert run(capsys, "--stack", stack)[0] == 0
    assert (home / "config_multinode.json").is_symlink()
    assert json.loads(real.read_text())["METAFLOW_USER_KEY"] == "mine"
    assert len(list(real.parent.glob("*.bak"))) == 1


@pytest.mark.parametrize(
    ("which", "content", "fragment"),
    [
        ("target", "{not json", "is not valid JSON"),
        ("target", '["METAFLOW_BATCH_JOB_QUEUE"]', "holds a JSON list"),
        ("target", None, "cannot read existing profile"),  # a directory where the file should be
        ("base", '{"METAFLOW_A": 1,}', "is not valid JSON"),
        ("base", b"\xff\xfe{}", "cannot read base config"),
    ],
)
def test_bad_files_are_reported_and_left_untouched(
    stack: str,
    home: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
    content: str | bytes | None,
    fragment: str,
) -> None:
    path = home / ("config_multinode.json" if which == "target" else "config.json")
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    before = {p.name: (p.read_bytes() if p.is_file() else None) for p in home.iterdir()}

    rc, stdout, err = run(capsys, "--stack", stack)

    assert_one_line_error(rc, err, fragment, str(path), "left untouched")
    assert {p.name: (p.read_bytes() if p.is_file() else None) for p in home.iterdir()} == before
    assert stdout == ""


def test_missing_base_profile_is_an_error(stack: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "--stack", stack, "--base", "nope")
    assert_one_line_error(rc, err, "--base 'nope'", "config_nope.json does not exist")
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("bad", ["../escape", ".hidden", "a/b", ""])
def test_invalid_profile_name(stack: str, home: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    rc, _, err = run(capsys, "--stack", stack, "--profile", bad)
    assert_one_line_error(rc, err, "--profile", "not a valid profile name")
    assert list(home.iterdir()) == []


# --- decorator values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("itype", "efa", "expected"),
    [
        # 192 vCPUs, 2 TiB: 190 vCPUs; 95% of 2097152 MiB rounded down to GiB; a quarter of that for /dev/shm.
        ("p5.48xlarge", 32, "gpu=8, efa=32, cpu=190, memory=1991680, shared_memory=497664"),
        # 96 vCPUs, 1152 GiB.
        ("p4d.24xlarge", 4, "gpu=8, efa=4, cpu=94, memory=1120256, shared_memory=279552"),
    ],
)
def test_decorator_line_fits_the_instance(itype: str, efa: int, expected: str) -> None:
    facts = load_catalog().get(itype)
    assert facts is not None
    template = json.loads(kit_template({"train": (itype, efa, 8, 2)}))
    queue = out.parse_outputs({k: v["Value"] for k, v in template["Outputs"].items()}).queues[0]
    line = mc.decorator_line(queue, facts)
    assert line == f'@batch(queue="{job_queue_name("train")}", {expected})'
    r = mc.batch_resources(facts)
    # Headroom: at least the 5% AWS recommends below installed memory, and /dev/shm inside the job's memory.
    assert r.memory <= facts.memory_mib * 0.95
    assert r.shared_memory < r.memory
    assert 0 < r.cpu < facts.vcpus


# --- error paths ---------------------------------------------------------------------------------


def test_stack_not_found(cfn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "--stack", "NoSuchStack", "--region", REGION)
    assert_one_line_error(rc, err, "stack NoSuchStack not found in region us-east-1")


def test_stack_under_review_is_refused(cfn: Any, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A CREATE change set that was never executed leaves the stack in REVIEW_IN_PROGRESS.
    cfn.create_change_set(StackName=STACK, ChangeSetName="pending", TemplateBody=kit_template(), ChangeSetType="CREATE")
    rc, _, err = run(capsys, "--stack", STACK)
    assert_one_line_error(rc, err, "REVIEW_IN_PROGRESS", "wait until it finishes")
    assert list(home.iterdir()) == []


def test_deleted_stack_is_refused(cfn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    stack_id = cfn.create_stack(StackName=STACK, TemplateBody=kit_template())["StackId"]
    cfn.delete_stack(StackName=STACK)
    rc, _, err = run(capsys, "--stack", stack_id)
    assert_one_line_error(rc, err, "DELETE_COMPLETE")


@pytest.mark.parametrize(
    "status",
    [
        "UPDATE_ROLLBACK_COMPLETE",
        "ROLLBACK_COMPLETE",
        "IMPORT_ROLLBACK_COMPLETE",
        "UPDATE_IN_PROGRESS",
        "CREATE_FAILED",
    ],
)
def test_only_successful_deploy_states_are_good(status: str) -> None:
    with pytest.raises(mc.ConfigError, match=status):
        mc.check_stack_status("S", status)
    for good in ("CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"):
        mc.check_stack_status("S", good)


def test_unknown_queue_lists_valid_ones(stack: str, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "--stack", stack, "--queue", "nope")
    assert_one_line_error(rc, err, "--queue 'nope'", "valid: train, eval-small")
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("drop", [out.QUEUE_NAMES, "TrainEfaInterfaces", out.METAFLOW_PROFILE])
def test_stack_without_kit_outputs(cfn: Any, home: Path, capsys: pytest.CaptureFixture[str], drop: str) -> None:
    cfn.create_stack(StackName="Other", TemplateBody=kit_template(drop=drop))
    rc, _, err = run(capsys, "--stack", "Other")
    assert_one_line_error(rc, err, f"has no output '{drop}'", "not a stack deployed by this kit")
    assert list(home.iterdir()) == []


def test_no_credentials(tmp_path: Path) -> None:
    """A real process with no credentials anywhere: no env keys, no files, instance metadata off."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "METAFLOW_HOME": str(tmp_path / "mf"),
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "kit", "metaflow-config", "--stack", STACK],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(proc.returncode, proc.stderr, "no usable AWS credentials", "Unable to locate credentials")
    assert not (tmp_path / "mf").exists()


def test_no_region(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    rc, _, err = run(capsys, "--stack", STACK)
    assert_one_line_error(rc, err, "no AWS region", "--region")


def test_unknown_aws_profile(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-aws-profile")
    rc, _, err = run(capsys, "--stack", STACK)
    assert_one_line_error(rc, err, "no-such-aws-profile", "AWS_PROFILE")


def test_configure_api_with_explicit_home(stack: str, cfn: Any, tmp_path: Path) -> None:
    """The entry point a sandbox test uses: a client for any endpoint and any directory."""
    other = tmp_path / "elsewhere"
    r = mc.configure(cfn, stack, queue="eval-small", profile="p", home=other)
    assert r.written and r.backup is None
    assert r.plan.path == other / "config_p.json"
    assert json.loads(r.plan.path.read_text())[mc.JOB_QUEUE_KEY] == job_queue_name("eval-small")
    again = mc.configure(cfn, stack, queue="eval-small", profile="p", home=other)
    assert not again.plan.changed and not again.written
