"""Deployable units of the kit, its config model and its validation."""
