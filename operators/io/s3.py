"""S3 and S3-compatible stores (MinIO, Ceph, R2) through boto3: a source and an output store.

Credentials come from boto3's standard chain (environment, profile, instance or pod role) and
are never stored on these objects, so pickling a source into a Ray actor carries no secret: each
process builds its own client. Retries use botocore's standard (or adaptive) mode, so throttling,
5xx answers and connection resets are retried with backoff instead of failing the job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

from operators.io.formats import Listing
from operators.io.sources import DocumentRef, Source, SourceError, classify
from operators.io.store import OutputStore, StoredObject, StoreError

SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
# Error codes that no retry will fix: fail fast with one line.
FATAL_CODES = {"NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
               "InvalidBucketName", "PermanentRedirect", "AuthorizationHeaderMalformed", "ExpiredToken"}
CONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


@dataclass(frozen=True)
class S3Options:
    """Client settings (never credentials)."""

    endpoint_url: str | None = None  # default: $AWS_ENDPOINT_URL, else AWS
    region: str | None = None
    addressing_style: str = "auto"  # auto | path | virtual
    retry_mode: str = "standard"  # standard | adaptive
    max_attempts: int = 8
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0


def parse_s3_uri(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if p.scheme != "s3" or not p.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return p.netloc, p.path.lstrip("/")


def redact(text: str) -> str:
    """Remove any credential value present in the environment from a message."""
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"(Credential=)[^/\s,]+", r"\1***", text)


def describe_error(e: Exception, what: str) -> str:
    """One clear line for a boto/botocore error."""
    code = getattr(e, "response", {}).get("Error", {}).get("Code") if hasattr(e, "response") else None
    msg = getattr(e, "response", {}).get("Error", {}).get("Message") if hasattr(e, "response") else None
    if code:
        text = f"{what}: {code}" + (f" ({msg})" if msg else "")
    else:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        text = f"{what}: {first}"
    return redact(text)


def make_client(opts: S3Options):
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": opts.retry_mode, "max_attempts": opts.max_attempts},
        s3={"addressing_style": opts.addressing_style},
        connect_timeout=opts.connect_timeout_s,
        read_timeout=opts.read_timeout_s,
        region_name=opts.region,
    )
    endpoint = opts.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


class _S3Base:
    def __init__(self, uri: str, opts: S3Options):
        self.bucket, prefix = parse_s3_uri(uri)
        self.prefix = prefix if (not prefix or prefix.endswith("/")) else prefix + "/"
        self.opts = opts
        self.uri = f"s3://{self.bucket}/{self.prefix}"
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.opts)
        return self._client

    def __getstate__(self):  # a client is per process; rebuild it after unpickling
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    def _pages(self, prefix: str) -> Iterator[dict]:
        """ListObjectsV2 pages, one at a time (continuation tokens): never the whole prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        yield from paginator.paginate(Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000})


class S3Source(_S3Base, Source):
    """Documents under ``s3://bucket/prefix/``; version = ETag plus size."""

    def __init__(self, uri: str, opts: S3Options | None = None, include: tuple[str, ...] = (),
                 exclude: tuple[str, ...] = ()):
        super().__init__(uri, opts or S3Options())
        self.include = include
        self.exclude = exclude
        self.listing = Listing()

    def list_documents(self) -> Iterator[DocumentRef]:
        self.listing = Listing()
        try:
            for page in self._pages(self.prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/") or classify(key[len(self.prefix):], self.include, self.exclude,
                                                     self.listing) is None:
                        continue
                    etag = obj.get("ETag", "").strip('"')
                    yield DocumentRef(uri=f"s3://{self.bucket}/{key}", version=f"{etag}-{obj['Size']}",
                                      size=int(obj["Size"]))
        except Exception as e:
            if _is_client_error(e) or _is_connection_error(e):
                raise SourceError(describe_error(e, f"cannot list {self.uri}")) from None
            raise

    def head(self, uri: str) -> DocumentRef | None:
        """The current version of one document (None when it is gone)."""
        bucket, key = parse_s3_uri(uri)
        try:
            h = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as e:
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise OSError(describe_error(e, f"cannot stat {uri}")) from None
        return DocumentRef(uri, f"{h['ETag'].strip(chr(34))}-{h['ContentLength']}", int(h["ContentLength"]))

    def read(self, ref: DocumentRef) -> bytes:
        bucket, key = parse_s3_uri(ref.uri)
        etag = ref.version.rsplit("-", 1)[0]
        try:
            # IfMatch: the bytes are those of the listed version, or a clear error.
            resp = self.client.get_object(Bucket=bucket, Key=key, **({"IfMatch": etag} if etag else {}))
        except Exception as e:
            raise OSError(describe_error(e, f"cannot read {ref.uri}")) from None
        body = resp["Body"]
        chunks, total = [], 0
        try:
            for chunk in iter(lambda: body.read(1 << 20), b""):  # bounded chunks, no double buffering
                chunks.append(chunk)
                total += len(chunk)
                if total > ref.size:
                    raise OSError(f"{ref.uri} grew while being read ({total} > {ref.size} bytes)")
        finally:
            body.close()
        return b"".join(chunks)


class S3Store(_S3Base, OutputStore):
    """The output root on S3: PUTs are atomic per object, so no rename is ever needed."""

    def __init__(self, uri: str, opts: S3Options | None = None):
        super().__init__(uri, opts or S3Options())

    def check(self) -> None:
        """Fail fast (missing bucket, denied access, bad endpoint) before any work."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as e:
            raise StoreError(describe_error(e, f"cannot use output {self.uri}")) from None

    def _key(self, key: str) -> str:
        return self.prefix + key

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as e:
            raise StoreError(describe_error(e, f"cannot write s3://{self.bucket}/{self._key(key)}")) from None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as e:
            if _error_code(e) in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)}") from None
            raise StoreError(describe_error(e, f"cannot read s3://{self.bucket}/{self._key(key)}")) from None

    # Conditional requests (If-None-Match, If-Match): S3 answers 412 when the condition fails, and
    # 409 when a concurrent conditional write on the key won; both mean "not this one".

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return resp["Body"].read(), resp["ETag"]
        except Exception as e:
            if _error_code(e) in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self._key(key)}") from None
            raise StoreError(describe_error(e, f"cannot read s3://{self.bucket}/{self._key(key)}")) from None

    def _put_if(self, key: str, data: bytes, **condition) -> str | None:
        try:
            return self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)["ETag"]
        except Exception as e:
            if _error_code(e) in CONDITION_FAILED or (condition.get("IfMatch") and _error_code(e) in ("NoSuchKey", "404")):
                return None
            raise StoreError(describe_error(e, f"cannot write s3://{self.bucket}/{self._key(key)}")) from None

    def create_exclusive(self, key: str, data: bytes) -> str | None:
        return self._put_if(key, data, IfNoneMatch="*")

    def replace_if(self, key: str, data: bytes, etag: str) -> str | None:
        return self._put_if(key, data, IfMatch=etag)

    def delete_if(self, key: str, etag: str) -> bool:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=etag)
            return True
        except Exception as e:
            if _error_code(e) in (*CONDITION_FAILED, "NoSuchKey", "404"):
                return False
            raise StoreError(describe_error(e, f"cannot delete s3://{self.bucket}/{self._key(key)}")) from None

    def list(self, prefix: str) -> list[StoredObject]:
        full = self._key(prefix.rstrip("/") + "/")
        out = []
        try:
            for page in self._pages(full):
                for obj in page.get("Contents", []):
                    out.append(StoredObject(obj["Key"][len(self.prefix):], int(obj["Size"])))
        except Exception as e:
            raise StoreError(describe_error(e, f"cannot list s3://{self.bucket}/{full}")) from None
        return out

    def open_input(self, key: str):
        return S3RangeFile(self, key)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            raise StoreError(describe_error(e, f"cannot delete s3://{self.bucket}/{self._key(key)}")) from None

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as e:
            if _error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(describe_error(e, f"cannot stat s3://{self.bucket}/{self._key(key)}")) from None


class S3RangeFile:
    """A read-only, seekable file over one object, read by ranged GETs (pyarrow reads a Parquet
    footer or a column chunk without fetching the rest)."""

    def __init__(self, store: S3Store, key: str):
        self.store, self.key = store, key
        self.pos = 0
        head = store.client.head_object(Bucket=store.bucket, Key=store._key(key))
        self.size = int(head["ContentLength"])
        self.closed = False

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        body = self.store.client.get_object(Bucket=self.store.bucket, Key=self.store._key(self.key),
                                            Range=f"bytes={self.pos}-{end - 1}")["Body"].read()
        self.pos += len(body)
        return body

    def close(self) -> None:
        self.closed = True


def _error_code(e: Exception) -> str | None:
    return getattr(e, "response", {}).get("Error", {}).get("Code") if hasattr(e, "response") else None


def _is_client_error(e: Exception) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(e, (ClientError, BotoCoreError))


def _is_connection_error(e: Exception) -> bool:
    from botocore.exceptions import EndpointConnectionError

    return isinstance(e, EndpointConnectionError)
