"""The sandbox's emulator process: moto's server with the compatibility layer applied.

Run by `python -m kit sandbox up` as a detached process:
`python -m kit.sandbox.server --port N [--host 127.0.0.1] [--ready-file PATH]`. Port 0 lets the
operating system pick a free port, so two sandboxes never race for one; once the socket listens,
the server writes the ready file (JSON: pid, host, port, moto version, patches) that the
launcher waits for. SIGTERM and SIGINT stop it cleanly.

Exit codes: 0 stopped normally, 3 moto missing or of another version, 4 cannot listen (port busy).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

EXIT_MOTO = 3
EXIT_LISTEN = 4


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kit.sandbox.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    parser.add_argument("--ready-file", type=Path, help="write pid/host/port here as JSON once listening")
    return parser.parse_args(argv)


def _missing(exc: ModuleNotFoundError, moto_version: str) -> int:
    print(
        f"error: {exc.name} is not installed; the sandbox needs moto[server]=={moto_version} "
        "(pip install -r requirements-dev.txt)",
        file=sys.stderr,
    )
    return EXIT_MOTO


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    from kit.sandbox import compat

    try:
        patches = compat.apply()
    except ModuleNotFoundError as exc:
        return _missing(exc, compat.MOTO_VERSION)
    except compat.CompatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MOTO

    try:
        from moto.core.models import default_user_config
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server
    except ModuleNotFoundError as exc:
        # moto without its [server] extra lacks flask/werkzeug.
        return _missing(exc, compat.MOTO_VERSION)

    # There is no Docker here: Batch jobs must not try to start containers (moto's
    # "batch_simple" backend marks them SUCCEEDED instead).
    default_user_config["batch"] = {"use_docker": False}

    app = DomainDispatcherApplication(create_backend_app)
    try:
        server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    except (OSError, SystemExit) as exc:
        # werkzeug reports a busy port itself and exits; say it in one line of ours.
        reason = getattr(exc, "strerror", None) or "the port is in use or not allowed"
        print(f"error: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return EXIT_LISTEN
    port = int(server.server_port)
    # moto builds some URLs (S3 presigned, SQS queue URLs) from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    info: dict[str, Any] = {
        "pid": os.getpid(),
        "host": args.host,
        "port": port,
        "moto": compat.MOTO_VERSION,
        "patches": list(patches),
    }
    if args.ready_file:
        _write_atomically(args.ready_file, json.dumps(info, indent=2) + "\n")
    print(f"sandbox emulator (moto {compat.MOTO_VERSION} + {len(patches)} patches) on http://{args.host}:{port}")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("sandbox emulator stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
