#!/usr/bin/env python3
"""CDK entry point: all the work is in stacks/app_builder.py."""

from stacks.app_builder import main

raise SystemExit(main())
