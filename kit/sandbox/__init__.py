"""The local AWS sandbox: a moto emulator with a compatibility layer (compat.py), run as a
background server (server.py, managed by lifecycle.py), that the real cdk CLI deploys the kit into
(cdk.py), plus the boto3 checks of a deployed stack (verify.py). Commands: `python -m kit sandbox`
and `python -m kit demo`."""

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
