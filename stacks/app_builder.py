"""Builds the CDK app from the config: read, validate (every finding at once), then wire
the stack and cdk-nag. On any config error it prints the findings and exits 1 before a
template is written, so nothing can be deployed from a bad config."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacks.config import ConfigError, Finding, KitConfig, load_cdk_json_context, read_raw_config
from stacks.validators import validate

if TYPE_CHECKING:
    from aws_cdk import App

    from stacks.multinode_stack import MultinodeStack

PROJECT_DIR = Path(__file__).resolve().parent.parent


def load_config(
    config_file: str | None, context: Mapping[str, Any] | None, env: Mapping[str, str]
) -> tuple[KitConfig, list[Finding]]:
    """The validated config and its warnings; raises ConfigError with every error."""
    raw, findings = read_raw_config(config_file, context)
    if findings:
        raise ConfigError(findings)
    config, findings = validate(raw, env)
    if config is None:
        raise ConfigError(findings)
    return config, findings


def build_app(config: KitConfig, warnings: list[Finding], app: App | None = None) -> tuple[App, MultinodeStack]:
    """A CDK App holding the kit's stack, with cdk-nag's AwsSolutions checks."""
    from aws_cdk import Annotations, App, Validations
    from cdk_nag import AwsSolutionsChecks

    from stacks.catalog import load_catalog
    from stacks.multinode_stack import MultinodeStack
    from stacks.plan import plan_queues

    app = app or App()
    stack = MultinodeStack(app, "Multinode", config=config, plans=plan_queues(config, load_catalog()))
    for w in warnings:
        Annotations.of(stack).add_warning_v2(f"kit:{w.path}", f"{w.path}: {w.message}")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def main() -> int:
    """What app.py runs under `cdk synth` / `cdk deploy`."""
    from aws_cdk import App

    # The CLI passes -c values and cdk.json's context through the app's context.
    app = App()
    config_file = app.node.try_get_context("config")
    context = {"multinode": app.node.try_get_context("multinode")} if config_file is None else None
    if context is not None and context["multinode"] is None:
        context = load_cdk_json_context(PROJECT_DIR)
    try:
        config, warnings = load_config(config_file, context, os.environ)
    except ConfigError as exc:
        print("The kit's config has errors; nothing was synthesized:", file=sys.stderr)
        for finding in exc.findings:
            print(f"  {finding}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"  {w}", file=sys.stderr)
    build_app(config, warnings, app)
    app.synth()
    return 0
