"""Start, find and stop the sandbox's emulator, and write the environment that points the AWS
SDKs and the cdk CLI at it.

State lives in one directory (default `.sandbox/` in the project): server.json (pid, host, port,
written by the server once it listens), server.log, env (`source .sandbox/env`), cdk-home/ (a
private CDK_HOME), empty aws-config / aws-credentials files (so the user's ~/.aws profiles,
SSO settings or endpoints cannot leak in), and what the demo adds (bootstrap/, cdk.out/).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kit.sandbox import ACCOUNT, REGION

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
DEFAULT_STATE_DIR = PROJECT_DIR / ".sandbox"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
# Variables that would send the SDKs or the cdk CLI somewhere else than the emulator.
FOREIGN_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CA_BUNDLE",
)
# Files the sandbox owns inside its state directory; `down` removes exactly these.
OWNED_ENTRIES = (
    "server.json",
    "server.json.tmp",
    "server.log",
    "env",
    "aws-config",
    "aws-credentials",
    "cdk-home",
    "bootstrap",
    "cdk.out",
)


class SandboxError(Exception):
    """A sandbox operation failed; the message says why and what to do."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    host: str
    port: int
    moto: str
    patches: tuple[str, ...]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def s3_endpoint_for_cloudformation(self) -> str:
        # moto reads the bucket from the path only when the host says "localhost" (aws-facts.md).
        return f"http://localhost:{self.port}"


class Sandbox:
    """One emulator and its state directory."""

    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR, region: str = REGION) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.region = region

    # Paths ----------------------------------------------------------------------------------
    @property
    def info_file(self) -> Path:
        return self.state_dir / "server.json"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    @property
    def cdk_home(self) -> Path:
        return self.state_dir / "cdk-home"

    # Queries --------------------------------------------------------------------------------
    def read_info(self) -> ServerInfo | None:
        try:
            raw = json.loads(self.info_file.read_text(encoding="utf-8"))
            return ServerInfo(
                pid=int(raw["pid"]),
                host=str(raw["host"]),
                port=int(raw["port"]),
                moto=str(raw.get("moto", "")),
                patches=tuple(raw.get("patches", ())),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def running(self) -> ServerInfo | None:
        """The live server of this state directory, or None (no state, process gone, not answering)."""
        info = self.read_info()
        if info is None or not _is_our_server(info.pid) or not answers(info.endpoint):
            return None
        return info

    # Lifecycle ------------------------------------------------------------------------------
    def up(self, port: int = 0, timeout: float = START_TIMEOUT_SECONDS) -> tuple[ServerInfo, bool]:
        """Start the emulator, or reuse the live one. Returns (info, started_now)."""
        live = self.running()
        if live is not None:
            if port and port != live.port:
                raise SandboxError(
                    f"the sandbox already runs on port {live.port} (state in {self.state_dir}); "
                    f"stop it first (python -m kit sandbox down) to use port {port}"
                )
            self.write_env(live)
            return live, False
        self._stop_stale()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.info_file, self.log_file):
            stale.unlink(missing_ok=True)
        command = [sys.executable, "-m", "kit.sandbox.server", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--ready-file", str(self.info_file)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_DIR), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_file, "ab") as log:
            # A new session: the server outlives this command and ignores the terminal's Ctrl-C.
            process = subprocess.Popen(
                command,
                cwd=PROJECT_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = process.poll()
            if code is not None:
                raise SandboxError(f"the emulator exited (code {code}): {self._log_tail()}")
            info = self.read_info()
            if info is not None and info.pid == process.pid and answers(info.endpoint):
                self.write_env(info)
                return info, True
            time.sleep(0.2)
        _terminate(process.pid)
        raise SandboxError(
            f"the emulator did not answer within {timeout:.0f} s; its log: {self.log_file} ({self._log_tail()})"
        )

    def down(self) -> bool:
        """Stop the emulator (if any) and remove the sandbox's state. True if a server was stopped."""
        info = self.read_info()
        stopped = False
        if info is not None and _is_our_server(info.pid):
            _terminate(info.pid)
            stopped = True
        for name in OWNED_ENTRIES:
            path = self.state_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()  # only when nothing else is in it
        return stopped

    def reset(self) -> None:
        """Forget every resource in the emulator (moto's reset); the server keeps running."""
        info = self.running()
        if info is None:
            raise SandboxError("the sandbox is not running")
        request = urllib.request.Request(f"{info.endpoint}/moto-api/reset", method="POST", data=b"")
        with _DIRECT.open(request, timeout=10) as response:
            if response.status != 200:
                raise SandboxError(f"reset answered HTTP {response.status}")

    # Environment ----------------------------------------------------------------------------
    def environment(self, info: ServerInfo) -> dict[str, str]:
        """The variables that point the AWS SDKs and the cdk CLI at the emulator."""
        return {
            "AWS_ENDPOINT_URL": info.endpoint,
            "AWS_ENDPOINT_URL_S3_FOR_CLOUDFORMATION": info.s3_endpoint_for_cloudformation,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_CONFIG_FILE": str(self.state_dir / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.state_dir / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "CDK_DEFAULT_ACCOUNT": ACCOUNT,
            "CDK_DEFAULT_REGION": self.region,
            "CDK_DISABLE_CLI_TELEMETRY": "true",
            "CDK_HOME": str(self.cdk_home),
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
            # An HTTP proxy of the user's must not sit between the SDKs and the emulator.
            "NO_PROXY": _no_proxy(os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""),
            "no_proxy": _no_proxy(os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or ""),
        }

    def process_env(self, info: ServerInfo, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) without foreign AWS settings, plus the sandbox's."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in FOREIGN_AWS_VARIABLES}
        env.update(self.environment(info))
        return env

    def write_env(self, info: ServerInfo) -> Path:
        self.cdk_home.mkdir(parents=True, exist_ok=True)
        for name in ("aws-config", "aws-credentials"):
            (self.state_dir / name).touch()
        lines = [
            "# Points the AWS SDKs and the cdk CLI at the local sandbox: source this file.",
            f"# Written by `python -m kit sandbox up`; the emulator's log is {self.log_file}.",
            f"unset {' '.join(FOREIGN_AWS_VARIABLES)}",
        ]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.environment(info).items()]
        self.env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self.env_file

    # Internals ------------------------------------------------------------------------------
    def _stop_stale(self) -> None:
        """A server of this state directory that runs but does not answer is stopped first."""
        info = self.read_info()
        if info is not None and _is_our_server(info.pid):
            _terminate(info.pid)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        errors = [line.removeprefix("error: ") for line in text if line.startswith("error:")]
        return errors[-1] if errors else " | ".join(text[-lines:]) or "empty log"


def _no_proxy(existing: str) -> str:
    hosts = ["127.0.0.1", "localhost"]
    return ",".join(hosts + [h for h in existing.split(",") if h and h not in hosts])


# Never through a proxy: the emulator is on this machine.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(endpoint: str, timeout: float = 2.0) -> bool:
    """True when a moto server answers at `endpoint` (its management API, no AWS call)."""
    try:
        with _DIRECT.open(f"{endpoint}/moto-api/config", timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _is_our_server(pid: int) -> bool:
    """The pid runs, and (where /proc tells) it is the sandbox server, not a reused pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"kit.sandbox.server" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def _terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    # Reap our own child if it has exited (it is a zombie until then).
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
