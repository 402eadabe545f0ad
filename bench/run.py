"""`make bench`: what the kit costs to run and what it provisions, as figures.

Measures on this machine, in one run, and writes bench/results.md (also printed):
1. `cdk synth` wall time (the real pinned CLI) for the default config against an empty CDK app synthesized the
   same way (the floor jsii and Node impose), and for 1, 4 and 16 queues; `python -m kit validate` time.
2. Test-suite wall time, unit and sandbox tiers separately (skip with --no-tests).
3. Bandwidth provisioned with efaInterfaces "max" for every EFA-capable accelerated type in the catalog.
4. Idle cost per hour of the default stack and of the same stack in an imported VPC, from bench/prices.json.

Times are medians of --repeat runs. Nothing here asserts: it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from constructs_lib.efa_layout import efa_cards, provisioned_gbps  # noqa: E402
from stacks.catalog import load_catalog  # noqa: E402
from stacks.config import parse_config  # noqa: E402
from stacks.plan import plan_queue, plan_queues  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python")
ENV = {
    **os.environ,
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    "CDK_DISABLE_CLI_TELEMETRY": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
}
EMPTY_APP = """
import aws_cdk as cdk
app = cdk.App()
cdk.Stack(app, "Empty")
app.synth()
"""


def _timed(cmd: list[str], cwd: Path, repeat: int) -> float:
    """Median wall time of `repeat` runs, after one untimed warm-up run (file caches, .pyc)."""
    times = []
    for i in range(repeat + 1):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        if i:
            times.append(elapsed)
    return statistics.median(times)


def _default_config() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]["multinode"]
    return raw


def _queues_config(n: int) -> dict[str, Any]:
    cfg = _default_config()
    cfg["queues"] = [{"name": f"q{i}", "instanceType": "p4d.24xlarge", "maxNodes": 4} for i in range(n)]
    return cfg


def bench_synth(repeat: int, tmp: Path) -> list[tuple[str, float]]:
    npx = [str(ROOT / "node_modules" / ".bin" / "cdk")]
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "app.py").write_text(EMPTY_APP)
    (empty / "cdk.json").write_text(json.dumps({"app": f"{PY} app.py"}))
    rows = [("empty CDK app (floor)", _timed([*npx, "synth", "--quiet", "-o", str(empty / "out")], empty, repeat))]
    rows.append(
        ("kit, default config (cdk.json)", _timed([*npx, "synth", "--quiet", "-o", str(tmp / "d")], ROOT, repeat))
    )
    for n in (1, 4, 16):
        path = tmp / f"q{n}.json"
        path.write_text(json.dumps(_queues_config(n)))
        cmd = [*npx, "synth", "--quiet", "-c", f"config={path}", "-o", str(tmp / f"o{n}")]
        rows.append((f"kit, {n} queue(s)", _timed(cmd, ROOT, repeat)))
    if (ROOT / "kit" / "validate.py").exists():
        rows.append(("python -m kit validate", _timed([PY, "-m", "kit", "validate"], ROOT, max(repeat, 5))))
    return rows


def bench_tests() -> list[tuple[str, float]]:
    rows = []
    for label, args in (
        ("unit tier (tests/unit)", ["tests/unit"]),
        ("sandbox tier (tests/sandbox)", ["tests/sandbox"]),
    ):
        if not (ROOT / args[0]).exists():
            continue
        start = time.perf_counter()
        proc = subprocess.run(
            [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        rows.append((f"{label}: {summary}", elapsed))
    return rows


def bandwidth_rows() -> list[tuple[str, int, int, float, float]]:
    catalog = load_catalog()
    out = []
    for facts in sorted(catalog.efa_capable(), key=lambda f: f.name):
        usable = len(efa_cards(facts.network_cards))
        if usable == 0 or not facts.supports_cluster_placement:
            continue
        from stacks.config import QueueConfig

        plan = plan_queue(QueueConfig(name="x", instance_type=facts.name, max_nodes=2), facts)
        got = provisioned_gbps(facts.network_cards, plan.slots)
        out.append((facts.name, plan.efa_count, facts.max_efa_interfaces, got, facts.total_peak_gbps))
    return out


def idle_cost(prices: dict[str, Any]) -> list[tuple[str, list[tuple[str, float]]]]:
    cfg, findings = parse_config(_default_config(), {})
    assert cfg is not None, findings
    catalog = load_catalog()
    plans = plan_queues(cfg, catalog)
    instances: list[tuple[str, float]] = []
    for p in plans:
        if p.queue.min_nodes:
            price = prices["instancesPerHour"].get(p.queue.instance_type)
            label = f"{p.queue.min_nodes} x {p.queue.instance_type} (minNodes)"
            instances.append(
                (label + ("" if price is not None else ": no price in table"), (price or 0) * p.queue.min_nodes)
            )
            gib = p.queue.root_volume_gib * p.queue.min_nodes
            instances.append((f"{gib} GiB gp3 root volumes", gib * prices["ebsGp3PerGibMonth"] / 730))
        else:
            instances.append((f"{p.queue.instance_type} (minNodes 0: none running)", 0.0))
    new_vpc = [
        ("NAT gateway (hourly charge)", prices["natGatewayPerHour"]),
        ("public IPv4 address of the NAT gateway", prices["publicIpv4PerHour"]),
        ("S3 gateway endpoint", prices["s3GatewayEndpointPerHour"]),
        ("VPC flow logs (REJECT only; ~0 GB/h when idle)", 0.0 * prices["cloudwatchLogsIngestPerGb"]),
        *instances,
    ]
    return [("default stack, new VPC", new_vpc), ("same queues, imported VPC", instances)]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    system = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}"
    return f"{system}; Python {platform.python_version()}, Node {node}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-tests", action="store_true", help="skip the test-suite timings")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.md")
    args = parser.parse_args()
    prices = json.loads((ROOT / "bench" / "prices.json").read_text())

    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}, by `make bench` (bench/run.py).",
        "",
        f"## 1. Synth and validate wall time (median of {args.repeat})",
        "",
        "| what | seconds | x floor |",
        "| --- | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        synth_rows = bench_synth(args.repeat, Path(tmp))
    floor = synth_rows[0][1]
    for label, secs in synth_rows:
        lines.append(f"| {label} | {secs:.2f} | {secs / floor:.2f} |")

    if not args.no_tests:
        lines += ["", "## 2. Test-suite wall time", "", "| tier | seconds |", "| --- | ---: |"]
        lines += [f"| {label} | {secs:.1f} |" for label, secs in bench_tests()]

    lines += [
        "",
        '## 3. Bandwidth provisioned with efaInterfaces "max"',
        "",
        "| instance type | EFA attached | EFA max | Gbps on EFA cards | Gbps total | share |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, got, most, gbps, total in bandwidth_rows():
        share = gbps / total if total else 0.0
        lines.append(f"| {name} | {got} | {most} | {gbps:g} | {total:g} | {share:.0%} |")

    lines += [
        "",
        f"## 4. Idle cost per hour ({prices['region']}, prices as of {prices['asOf']}; see bench/prices.json)",
        "",
    ]
    for title, items in idle_cost(prices):
        lines += [f"**{title}**", "", "| item | USD/hour |", "| --- | ---: |"]
        lines += [f"| {label} | {usd:.4f} |" for label, usd in items]
        lines += [f"| **total** | **{sum(u for _, u in items):.4f}** |", ""]

    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
