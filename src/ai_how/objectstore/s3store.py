"""``s3://`` backend for any S3 endpoint (MinIO, SeaweedFS, AWS, moto) through boto3.

Endpoint, region and the names of the credential variables come from the config;
the secrets themselves only ever come from the environment.

Every PUT carries the object's SHA-256 (``ChecksumAlgorithm=SHA256`` plus the value), hashed from
the very bytes sent: the server verifies them on write and returns the checksum, so a sync needs
no read-back where the server confirms it. Objects up to ``MULTIPART_THRESHOLD`` go in one
``put_object``; larger ones as a multipart upload with a SHA-256 checksum per part.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import math
import os
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ai_how.objectstore.base import ObjectInfo, ObjectStoreError, PutResult, SourceChangedError, dir_prefix

if TYPE_CHECKING:
    from ai_how.config.models import ObjectStore as ObjectStoreConfig

MULTIPART_THRESHOLD = 8 * 1024 * 1024  # larger objects go multipart
MULTIPART_CHUNK = 8 * 1024 * 1024  # part size (grown for objects that would need > 10,000 parts)
MAX_PARTS = 10_000
PART_SLOTS = 10  # parts in flight per store, all files together: bounds memory to PART_SLOTS x part size
MAX_CONNECTIONS = 64  # the connection pool of the one shared client: the most workers a sync may use
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
    from botocore.handlers import add_expect_header

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
        # No SHA-256 pass over each body for the signature: every body this store sends carries its
        # SHA-256 checksum in a signed header, which the server verifies (botocore does the same on https).
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        request_checksum_calculation="when_supported",
        max_pool_connections=MAX_CONNECTIONS,
    )
    # A session of its own: boto3's default session caches the credentials it first found in the
    # environment, which would outlive a change of the variables (and sessions are not thread-safe).
    client = boto3.session.Session().client("s3", config=retry, **kwargs)
    # One round trip per small object: no "Expect: 100-continue" wait before a single-PUT body (at
    # most MULTIPART_THRESHOLD bytes); multipart parts keep it.
    client.meta.events.unregister("before-call.s3", add_expect_header)
    client.meta.events.register("before-call.s3.UploadPart", add_expect_header)
    return client


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _unquote(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


class S3Store:
    default_workers = 16  # small objects: one request each, so parallelism is what makes a sync fast

    def __init__(self, bucket: str, config: ObjectStoreConfig | None) -> None:
        self.bucket = bucket
        self.config = config
        self.client = s3_client(config)  # one client (thread-safe) for every call: its connections are reused
        self._part_slots = threading.BoundedSemaphore(PART_SLOTS)
        self._bucket_lock = threading.Lock()
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
        """Create the bucket if it is missing (once per store, whichever worker thread asks first)."""
        if self._bucket_checked:
            return
        with self._bucket_lock:
            if not self._bucket_checked:
                self._check_bucket()

    def _check_bucket(self) -> None:
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
    def put_file(self, key: str, path: Path, sha256: str | None = None) -> PutResult:
        """Upload ``path`` with its SHA-256 checksum, hashed in the one pass that reads it.

        Bytes that do not hash to ``sha256`` (when given) are refused: the file changed since it was hashed.
        """
        self.ensure_bucket()
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {path}: {exc.strerror}") from None
        try:
            if size <= MULTIPART_THRESHOLD:
                return self._put_single(key, path, sha256)
            return self._put_multipart(key, path, sha256, size)
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {path}: {exc.strerror or exc}") from None

    def _put_single(self, key: str, path: Path, sha256: str | None) -> PutResult:
        data = path.read_bytes()
        digest = hashlib.sha256(data).digest()
        if sha256 is not None and digest.hex() != sha256:
            raise SourceChangedError.of(path)
        response = self._put_object(key, data, digest)
        returned = response.get("ChecksumSHA256")
        etag = _unquote(response.get("ETag"))
        return PutResult(digest.hex(), len(data), etag, returned, confirmed=returned is not None)

    def _put_object(self, key: str, data: bytes, digest: bytes) -> dict[str, Any]:
        """One PUT carrying the body's SHA-256 (the store checks it on write); the checksum it returns is
        compared with the one sent."""
        try:
            response: dict[str, Any] = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(digest),
                Metadata={"sha256": digest.hex()},
            )
        except Exception as exc:
            raise self._fail(exc, f"upload of {key}") from None
        self._check_returned(key, response.get("ChecksumSHA256"), _b64(digest))
        return response

    def _check_returned(self, key: str, returned: str | None, sent: str) -> None:
        if returned is not None and returned.split("-")[0] != sent.split("-", maxsplit=1)[0]:
            raise ObjectStoreError(
                f"the S3 endpoint stored {key} with SHA-256 checksum {returned}, not the {sent} that was sent"
            )

    def _put_multipart(self, key: str, path: Path, sha256: str | None, size: int) -> PutResult:
        """Multipart upload, one SHA-256 checksum per part, the whole file hashed in the same pass.

        The object carries ``sha256`` metadata only when the hash was known before the upload began.
        """
        part_size = max(MULTIPART_CHUNK, math.ceil(size / MAX_PARTS))
        try:
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                Metadata={"sha256": sha256} if sha256 else {},
                ChecksumAlgorithm="SHA256",
            )["UploadId"]
        except Exception as exc:
            raise self._fail(exc, f"upload of {key}") from None
        try:
            parts, digests, whole, sent = self._send_parts(key, path, sha256, upload_id, part_size)
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException as exc:
            # Best effort: a leftover upload is the bucket lifecycle's to clean; the error below matters.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(exc, ObjectStoreError) or not isinstance(exc, Exception):
                raise
            raise self._fail(exc, f"upload of {key}") from None
        composite = f"{_b64(hashlib.sha256(b''.join(digests)).digest())}-{len(digests)}"
        returned = response.get("ChecksumSHA256") or self._head_checksum(key)
        self._check_returned(key, returned, composite)
        # Confirmed: every part's bytes matched its checksum, and the same bytes hash to ``whole``.
        etag = _unquote(response.get("ETag"))
        return PutResult(whole, sent, etag, returned, confirmed=returned is not None)

    def _send_parts(
        self, key: str, path: Path, sha256: str | None, upload_id: str, part_size: int
    ) -> tuple[list[dict[str, Any]], list[bytes], str, int]:
        """Send every part; return them, their digests, the whole file's sha256 and the bytes sent."""
        whole = hashlib.sha256()
        digests: list[bytes] = []
        pending: deque[Future[dict[str, Any]]] = deque()
        parts: list[dict[str, Any]] = []
        with ThreadPoolExecutor(PART_SLOTS) as pool, path.open("rb") as source:
            before = os.fstat(source.fileno())
            try:
                while future := self._next_part(pool, source, part_size, whole, digests, key, upload_id):
                    pending.append(future)
                    while pending and pending[0].done():
                        parts.append(pending.popleft().result())
                parts.extend(future.result() for future in list(pending))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            after, sent = os.fstat(source.fileno()), source.tell()
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            raise SourceChangedError.of(path)  # written to while it was read: the parts may mix two versions
        if sha256 is not None and whole.hexdigest() != sha256:
            raise SourceChangedError.of(path)
        return parts, digests, whole.hexdigest(), sent

    def _next_part(
        self,
        pool: ThreadPoolExecutor,
        source: BinaryIO,
        part_size: int,
        whole: Any,
        digests: list[bytes],
        key: str,
        upload_id: str,
    ) -> Future[dict[str, Any]] | None:
        """Read, hash and submit the next part (None at the end); a slot is held until it is sent."""
        self._part_slots.acquire()
        future = None
        try:
            chunk = source.read(part_size)
            if chunk:
                whole.update(chunk)
                digests.append(hashlib.sha256(chunk).digest())
                future = pool.submit(self._send_part, key, upload_id, len(digests), chunk, digests[-1])
        finally:
            if future is None:
                self._part_slots.release()
        if future is not None:
            future.add_done_callback(lambda _: self._part_slots.release())  # sent, failed or cancelled
        return future

    def _send_part(
        self, key: str, upload_id: str, number: int, chunk: bytes, digest: bytes
    ) -> dict[str, Any]:
        try:
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=chunk,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(digest),
            )
        except Exception as exc:
            raise self._fail(exc, f"upload of {key} (part {number})") from None
        self._check_returned(f"{key} (part {number})", response.get("ChecksumSHA256"), _b64(digest))
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": _b64(digest)}

    def _head_checksum(self, key: str) -> str | None:
        """The object's SHA-256 checksum as the server reports it (None if it keeps none)."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except Exception as exc:
            raise self._fail(exc, f"head of {key}") from None
        value = response.get("ChecksumSHA256")
        return str(value) if value else None

    def put_bytes(self, key: str, data: bytes) -> None:
        self.ensure_bucket()
        self._put_object(key, data, hashlib.sha256(data).digest())

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
        return ObjectInfo(
            key,
            int(response["ContentLength"]),
            response.get("Metadata", {}).get("sha256"),
            _unquote(response.get("ETag")),
        )

    def open(self, key: str) -> BinaryIO:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            raise self._fail(exc, f"download of {key}") from None
        return body  # type: ignore[no-any-return]

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under the directory ``prefix`` (``m/v1`` never lists ``m/v10/...``)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=dir_prefix(prefix)):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], int(item["Size"]), None, _unquote(item.get("ETag")))
        except Exception as exc:
            if _code(exc) == "NoSuchBucket":
                return  # no bucket yet: nothing under any prefix (the first upload creates it)
            raise self._fail(exc, "list") from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._fail(exc, f"delete of {key}") from None


def _code(exc: Exception) -> str:
    """The S3 error code of a botocore ClientError ("" for anything else)."""
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
