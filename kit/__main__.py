"""Entry point: `python -m kit <command> [options]`."""

from kit.cli import main

raise SystemExit(main())
