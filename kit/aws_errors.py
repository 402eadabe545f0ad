"""One-line, traceback-free messages for the AWS SDK errors the kit's commands meet."""

from __future__ import annotations


def describe_aws_error(exc: Exception) -> str:
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        ProfileNotFound,
    )

    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            f"no usable AWS credentials ({exc}): configure them (aws configure, AWS_PROFILE, "
            "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, NoRegionError):
        return "no AWS region: pass --region or set AWS_REGION"
    if isinstance(exc, ProfileNotFound):
        return f"{exc} (the AWS_PROFILE environment variable names an unknown AWS profile)"
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS: {exc}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"AWS refused {exc.operation_name} ({error.get('Code', '?')}): {error.get('Message', exc)}"
    return f"AWS error: {exc}"
