"""Operator commands of the kit: `python -m kit <command>`."""
