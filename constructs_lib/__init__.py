"""Reusable constructs for multi-node AWS Batch; they know nothing of cdk.json.

This package's __init__ imports nothing so that pure helpers (efa_layout) load without aws_cdk.
"""
