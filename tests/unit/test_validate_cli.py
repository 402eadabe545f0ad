"""`python -m kit validate` as a user runs it: a subprocess per config (cheap: no aws_cdk).

Invalid configs exit 1 and name every expected key path; valid and warnings-only configs
exit 0; unreadable input and bad usage give a message, not a traceback; and the command
never loads aws_cdk or jsii.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.unit.invalid_configs import INVALID, VALID, WARNINGS, Case

ROOT = Path(__file__).resolve().parents[2]
CDK_MODULES = ("aws_cdk", "jsii", "constructs", "cdk_nag")


def run_validate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CDK_DEFAULT_ACCOUNT", None)
    return subprocess.run(
        [sys.executable, "-m", "kit", "validate", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(tmp_path: Path, raw: Any, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(raw, indent=2))
    return path


def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout and "Traceback" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def table_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """One `validate --config` run per table case, two at a time (the runs are independent)."""
    base = tmp_path_factory.mktemp("table")
    cases = INVALID + VALID + WARNINGS
    paths = {c.id: write_config(base, c.config, f"{c.id}.json") for c in cases}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(paths, pool.map(lambda p: run_validate("--config", str(p)), paths.values()), strict=True))
    return {case_id: (paths[case_id], results[case_id]) for case_id in paths}


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_config_exits_1_and_names_every_path(table_runs: dict[str, Any], case: Case) -> None:
    path, result = table_runs[case.id]
    assert_no_traceback(result)
    assert result.returncode == 1, result.stdout
    error_lines = [line for line in result.stdout.splitlines() if line.startswith("ERROR: ")]
    for key_path in case.errors:
        assert any(line.startswith(f"ERROR: {key_path}: ") for line in error_lines), result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(str(path)) and f"{len(error_lines)} error" in summary


def test_several_errors_are_all_printed_before_the_summary(table_runs: dict[str, Any]) -> None:
    case = next(c for c in INVALID if c.id == "several-mistakes")
    _, result = table_runs[case.id]
    lines = result.stdout.strip().splitlines()
    assert [line.split(": ")[1] for line in lines[:-1]] == list(case.errors)
    assert "5 errors, 0 warnings" in lines[-1]


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.id)
def test_valid_config_exits_0(table_runs: dict[str, Any], case: Case) -> None:
    _, result = table_runs[case.id]
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("OK (0 errors, 0 warnings)")


@pytest.mark.parametrize("case", WARNINGS, ids=lambda c: c.id)
def test_warnings_only_config_exits_0_and_prints_the_warnings(table_runs: dict[str, Any], case: Case) -> None:
    _, result = table_runs[case.id]
    assert_no_traceback(result)
    assert result.returncode == 0, result.stdout
    for path in case.warnings:
        assert f"WARNING: {path}: " in result.stdout
    assert "ERROR" not in result.stdout
    assert f"OK (0 errors, {len(case.warnings)} warning" in result.stdout


def test_default_is_the_cdk_json_context() -> None:
    result = run_validate()
    assert result.returncode == 0, result.stdout
    assert "cdk.json (context.multinode): OK" in result.stdout


def test_works_from_another_directory(tmp_path: Path) -> None:
    path = write_config(tmp_path, INVALID[0].config)
    result = run_validate("--config", str(path), cwd=tmp_path)
    assert result.returncode == 1 and f"ERROR: {INVALID[0].errors[0]}: " in result.stdout


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "not found"),
        (b'{"region": "us-east-1",', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe\x00\x01", "not UTF-8"),
        (b"[" * 50_000 + b"]" * 50_000, "cannot be parsed"),
    ],
    ids=["missing", "truncated", "empty", "binary", "deep-nesting"],
)
def test_unreadable_config_exits_1_with_a_message(tmp_path: Path, content: bytes | None, words: str) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_bytes(content)
    result = run_validate("--config", str(path))
    assert_no_traceback(result)
    assert result.returncode == 1
    assert words in result.stdout and result.stdout.startswith("ERROR: config: ")


def test_bad_usage_exits_2_with_usage() -> None:
    result = run_validate("--confg", "x.json")
    assert_no_traceback(result)
    assert result.returncode == 2 and "usage: python -m kit validate" in result.stderr


def test_help_lists_the_config_option() -> None:
    result = run_validate("--help")
    assert result.returncode == 0 and "--config FILE" in result.stdout


def test_validate_never_imports_aws_cdk(tmp_path: Path) -> None:
    """Run the command in a fresh interpreter, then list the CDK modules it loaded."""
    case = next(c for c in INVALID if c.id == "several-mistakes")
    path = write_config(tmp_path, case.config)
    probe = (
        "import sys\n"
        "from kit.cli import main\n"
        f"code = main(['validate', '--config', {str(path)!r}])\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {CDK_MODULES!r})\n"
        "print('LOADED=' + ','.join(loaded))\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1 and "ERROR: region: " in result.stdout
    assert "LOADED=\n" in result.stdout, result.stdout
    # The probe itself would see the modules if they were loaded: prove it can.
    control = subprocess.run(
        [sys.executable, "-c", probe.replace("from kit.cli import main", "import aws_cdk\nfrom kit.cli import main")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"},
        check=False,
    )
    assert "LOADED=aws_cdk" in control.stdout, control.stdout + control.stderr


def test_validate_import_time_has_no_cdk_module(tmp_path: Path) -> None:
    path = write_config(tmp_path, VALID[0].config)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kit", "validate", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    imported = [
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    ]
    assert "stacks.validators" in imported
    assert not [m for m in imported if m.split(".")[0] in CDK_MODULES]
