"""``s3://`` backend for any S3 endpoint (MinIO, SeaweedFS, AWS, moto) through boto3.

Endpoint, region and the names of the credential variables come from the config;
the secrets themselves only ever come from the environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ai_how.objectstore.base import ObjectInfo, ObjectStoreError

if TYPE_CHECKING:
    from ai_how.config.models import ObjectStore as ObjectStoreConfig

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNK = 64 * 1024 * 1024
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "403",
    "Forbidden",
}


def s3_client(config: ObjectStoreConfig | None) -> Any:
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {}
    if config is not None:
        creds = config.credentials
        key_id, secret = os.environ.get(creds.access_key_id_env), os.environ.get(creds.secret_access_key_env)
        if key_id and secret:
            kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = key_id, secret
            if creds.session_token_env and os.environ.get(creds.session_token_env):
                kwargs["aws_session_token"] = os.environ[creds.session_token_env]
        kwargs["region_name"] = config.region
        if config.endpoint:
            kwargs["endpoint_url"] = config.endpoint
    else:
        endpoint = os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            kwargs["endpoint_url"] = endpoint
    retry = Config(
        retries={"max_attempts": 6, "mode": "standard"},
        connect_timeout=5,
        read_timeout=120,
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_supported",
    )
    return boto3.client("s3", config=retry, **kwargs)


class S3Store:
    def __init__(self, bucket: str, config: ObjectStoreConfig | None) -> None:
        self.bucket = bucket
        self.config = config
        self.client = s3_client(config)
        endpoint = config.endpoint if config and config.endpoint else "AWS"
        self.url = f"s3://{bucket} ({endpoint})"
        self._bucket_checked = False

    # -- error translation
    def _fail(self, exc: Exception, action: str) -> ObjectStoreError:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = self.config.endpoint if self.config and self.config.endpoint else "AWS S3"
        if isinstance(exc, EndpointConnectionError):
            return ObjectStoreError(
                f"cannot reach the S3 endpoint {where}",
                fix="start it (`ai-how stack up`) or fix mlops.object_store.endpoint",
            )
        if isinstance(exc, NoCredentialsError):
            return ObjectStoreError("no S3 credentials", fix=self._credential_fix())
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _CREDENTIAL_CODES:
                return ObjectStoreError(
                    f"the S3 endpoint {where} rejected the credentials ({code})", fix=self._credential_fix()
                )
            if code in ("NoSuchBucket", "404") and action == "bucket":
                return ObjectStoreError(f"bucket {self.bucket} does not exist at {where}")
            return ObjectStoreError(
                f"S3 {action} failed at {where}: {code} {exc.response.get('Error', {}).get('Message', '')}".strip()
            )
        return ObjectStoreError(f"S3 {action} failed at {where}: {exc}")

    def _credential_fix(self) -> str:
        creds = self.config.credentials if self.config else None
        names = (
            f"{creds.access_key_id_env} and {creds.secret_access_key_env}"
            if creds
            else "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
        return f"export {names} with valid keys for this endpoint"

    def ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise self._fail(exc, "bucket") from None
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except Exception as create_exc:
                raise self._fail(create_exc, "create bucket") from None
        except Exception as exc:
            raise self._fail(exc, "bucket") from None
        self._bucket_checked = True

    # -- operations
    def put_file(self, key: str, path: Path, sha256: str) -> None:
        from boto3.s3.transfer import TransferConfig

        self.ensure_bucket()
        transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNK, max_concurrency=8
        )
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs={"Metadata": {"sha256": sha256}, "ChecksumAlgorithm": "SHA256"},
                Config=transfer,
            )
        except Exception as exc:
            raise self._fail(exc, f"upload of {key}") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        import hashlib

        self.ensure_bucket()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ChecksumAlgorithm="SHA256",
                Metadata={"sha256": hashlib.sha256(data).hexdigest()},
            )
        except Exception as exc:
            raise self._fail(exc, f"upload of {key}") from None

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(exc, f"head of {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"head of {key}") from None
        return ObjectInfo(key, int(response["ContentLength"]), response.get("Metadata", {}).get("sha256"))

    def open(self, key: str) -> BinaryIO:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            raise self._fail(exc, f"download of {key}") from None
        return body  # type: ignore[no-any-return]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], int(item["Size"]), None)
        except Exception as exc:
            raise self._fail(exc, "list") from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._fail(exc, f"delete of {key}") from None
