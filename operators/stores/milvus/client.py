"""What every Milvus role shares: where and how to connect, one-line errors, retries, and the
column form of rows.

The roles are separate classes: ``MilvusWriter`` (operators/stores/milvus/writer.py: collections and
upserts, on the write workers), ``MilvusReader`` (operators/stores/milvus/reader.py: the plan of an
existing index and its vectors, for search and report) and the bulk loader
(operators/stores/milvus/bulk.py). pymilvus' private API lives in operators/stores/milvus/private.py alone.
Transient failures (a server restarting, a dropped connection) are retried with backoff; anything
else becomes one ``MilvusError`` line that names the server without its credentials.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa

from operators.layouts import encodings as E
from operators.layouts.layout import parse_layout
from operators.stores.milvus.schema import (
    EXACT_VTYPE,
    FieldPlan,
    MilvusError,
    MilvusPlan,
    ServerInfo,
    server_info,
)

_TRANSIENT = re.compile(r"unavailable|connect|deadline|timed? ?out|closed|reset|temporarily|rate limit|try again",
                        re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """The URI without user info (``http://user:pw@host`` -> ``http://host``)."""
    p = urlparse(uri)
    if p.username or p.password:
        host = p.hostname + (f":{p.port}" if p.port else "")
        return p._replace(netloc=host).geturl()
    return uri


def is_lite_uri(uri: str) -> bool:
    return urlparse(uri).scheme not in ("http", "https", "tcp", "grpc", "unix")


LITE_FILE = "milvus.db"  # an OUT's own Milvus Lite database


def default_uri(out: str) -> str | None:
    """The Milvus of an OUT when none is given: its Milvus Lite file, OUT/milvus.db; None for an OUT
    in an object store (Milvus Lite needs a local file).

    >>> default_uri("demo-out"), default_uri("file:///data/out"), default_uri("s3://bucket/out")
    ('demo-out/milvus.db', '/data/out/milvus.db', None)
    """
    parsed = urlparse(out)
    if parsed.scheme not in ("", "file"):
        return None
    return os.path.join(unquote(parsed.path) if parsed.scheme == "file" else out, LITE_FILE)


def escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True)
class MilvusConnection:
    """Where and how to connect. Secrets (token, password) come from the environment of the
    process that connects (``token_env``, ``password_env``): a connection pickled into a Ray
    worker carries the variable names, never the values (``public()``)."""

    uri: str
    token: str | None = None
    user: str | None = None
    password: str | None = None
    db_name: str | None = None
    ca_file: str | None = None  # PEM of the CA (or the self-signed server certificate) for TLS
    server_name: str | None = None  # TLS server name, when it differs from the URI's host
    timeout_s: float = 60.0
    retries: int = 3  # extra attempts for transient failures, with exponential backoff
    token_env: str | None = "MILVUS_TOKEN"
    password_env: str | None = "MILVUS_PASSWORD"

    @classmethod
    def from_options(cls, uri: str, options) -> MilvusConnection:
        """The connection that the Milvus options describe (pipelines/options.py): a mapping of
        the store's options, or a command's parsed arguments (what is not given takes its
        default)."""
        def get(key):
            return options.get(key) if isinstance(options, dict) else getattr(options, key, None)

        kw = {name: get(key) for key, name in (
            ("milvus_timeout_s", "timeout_s"), ("milvus_retries", "retries"), ("milvus_token_env", "token_env"),
            ("milvus_password_env", "password_env")) if get(key) is not None}
        return cls(uri, user=get("milvus_user"), db_name=get("milvus_db"), ca_file=get("milvus_ca_file"),
                   server_name=get("milvus_server_name"), **kw)

    def public(self) -> MilvusConnection:
        """The same connection without secret values (what may travel to other processes)."""
        return dataclasses.replace(self, token=None, password=None)

    def resolved(self) -> MilvusConnection:
        """Secrets from this process' environment where none are set."""
        token = self.token or (os.environ.get(self.token_env) if self.token_env else None) or None
        password = self.password or (os.environ.get(self.password_env) if self.password_env else None) or None
        return dataclasses.replace(self, token=token, password=password)

    def client_kwargs(self) -> dict:
        kw: dict = {"uri": self.uri, "timeout": self.timeout_s}
        if self.token:
            kw["token"] = self.token
        if self.user:
            kw["user"] = self.user
            kw["password"] = self.password or ""
        if self.db_name:
            kw["db_name"] = self.db_name
        if self.ca_file or urlparse(self.uri).scheme == "https":
            kw["secure"] = True
        if self.ca_file:
            kw["server_pem_path"] = self.ca_file
        if self.server_name:
            kw["server_name"] = self.server_name
        return kw

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.password) if s]

    @property
    def lite(self) -> bool:
        return is_lite_uri(self.uri)


def release_lite(path: str) -> None:
    """Stop this process' Milvus Lite server for a database file (pymilvus keeps it, and its
    lock on the file, until the process exits): another process can open the file after."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(path)


def first_line(e: BaseException, secrets: list[str] = ()) -> str:
    """One readable line of a client error: pymilvus' ``<MilvusException: (code=1, message=...)>``
    becomes its message, cut at a sentence, without secrets."""
    msg = str(e).strip()
    m = re.search(r"message=(.*?)\)>?\s*$", msg, re.DOTALL)
    if m:
        msg = m.group(1)
    msg = msg.splitlines()[0] if msg else type(e).__name__
    for s in secrets:
        msg = msg.replace(s, "***")
    if len(msg) > 300:
        cut = msg[:300]
        msg = (cut[:cut.rfind(". ") + 1] if ". " in cut else cut.rsplit(" ", 1)[0]) + " ..."
    return msg


class MilvusClientBase:
    """A connection to one logical index (``<collection>_*``) and the calls every role needs."""

    def __init__(self, conn: MilvusConnection | str, collection: str = "pagemill"):
        self.conn = conn if isinstance(conn, MilvusConnection) else MilvusConnection(conn)
        self.collection = collection
        self.client = None
        self.server: ServerInfo | None = None
        self.plan: MilvusPlan | None = None

    @property
    def uri(self) -> str:
        return self.conn.uri

    @property
    def pages_collection(self) -> str:
        return f"{self.collection}_pages"

    @property
    def collections(self) -> list[str]:
        return self.plan.collections if self.plan else []

    def connect(self) -> None:
        """Open the client (secrets from this process' environment) and learn the server's
        version. A Milvus Lite file must exist already unless ``create`` (readers never create)."""
        self._guard("connect", self._connect, prefix="cannot use")

    def _connect(self) -> None:
        from pymilvus import MilvusClient

        self.conn = self.conn.resolved()
        if self.conn.ca_file and not os.path.isfile(self.conn.ca_file):
            raise MilvusError(f"milvus_ca_file: no such file {self.conn.ca_file!r}")
        self.client = MilvusClient(**self.conn.client_kwargs())
        self.server = server_info(self.client.get_server_version())

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
            if self.conn.lite:
                release_lite(self.uri)

    def _guard(self, what: str, fn, *args, prefix: str | None = None, **kwargs):
        """Run a client call; any failure becomes one MilvusError line naming the URI (no secret)."""
        try:
            return fn(*args, **kwargs)
        except MilvusError:
            raise  # composed here, with the server's part already scrubbed
        except Exception as e:
            where = redact_uri(self.uri)
            head = f"{prefix} Milvus at {where}" if prefix else f"Milvus at {where} failed during {what}"
            raise MilvusError(f"{head}: {first_line(e, self.conn.secrets())}") from None

    def _call(self, what: str, fn, *args, **kwargs):
        """A client call, retried on transient failures (upserts and deletes are idempotent)."""
        for attempt in range(self.conn.retries + 1):
            try:
                return fn(*args, **kwargs)
            except MilvusError:
                raise
            except Exception as e:
                if attempt >= self.conn.retries or not _TRANSIENT.search(str(e) or type(e).__name__):
                    raise
                time.sleep(min(0.5 * 2 ** attempt, 8.0))

    def count(self, collection: str, filter: str = "") -> int:
        return int(self._guard("count", self._count, collection, filter)[0]["count(*)"])

    def _count(self, collection: str, filter: str):
        def query():
            return self.client.query(collection, filter=filter, output_fields=["count(*)"], consistency_level="Strong")

        try:
            return query()
        except Exception as e:
            # A Milvus Lite file reopened by a new process (or after its writer closed it) holds
            # its collections released: load, then count.
            if "released" not in str(e) and "not loaded" not in str(e):
                raise
            self.client.load_collection(collection)
            return query()

    def count_own(self, collection: str, corpus: str | None = None) -> int:
        """Rows of one corpus (with a partition key, other corpora share the collection)."""
        from operators.stores.milvus.schema import CORPUS

        if self.plan is not None and self.plan.partition_key and corpus:
            return self.count(collection, f'{CORPUS} == "{escape(corpus)}"')
        return self.count(collection)

    def flush(self) -> None:
        """Seal every collection's segments. A server's flush of one collection returns once its
        segments are sealed (pymilvus asks every 0.5 s, about a second for a small one): the
        collections are flushed side by side."""
        if self.conn.lite or len(self.collections) < 2:
            for c in self.collections:
                self._guard("flush", self._call, "flush", self.client.flush, c)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.collections), thread_name_prefix="milvus-flush") as pool:
            flushes = [pool.submit(self._guard, "flush", self._call, "flush", self.client.flush, c)
                       for c in self.collections]
            for f in flushes:
                f.result()


# ---------------------------------------------------------------------------------------------
# Rows as columns

_PB_TYPES = {"varchar": 21, "int32": 4, "float": 101, "float16": 102, "binary": 100, "int8": 105}  # schema.proto DataType


@dataclass
class Columns:
    """One collection's entities as columns: field -> (kind, values). Scalar kinds ("varchar",
    "int32") hold lists; vector kinds ("float", "float16", "binary", "int8") a 2-D array with one
    row per entity (binary: packed bits); "struct" a list of struct lists per entity."""

    n: int
    fields: dict[str, tuple[str, object]]

    @property
    def has_struct(self) -> bool:
        return any(kind == "struct" for kind, _ in self.fields.values())

    def rows(self) -> list[dict]:
        """The same entities as the row dicts pymilvus' row API (and bulk import) take."""
        cols = [(name, _row_values(kind, values)) for name, (kind, values) in self.fields.items()]
        return [{name: values[i] for name, values in cols} for i in range(self.n)]

    def to_field_data(self, fields_data, start: int, stop: int) -> None:
        """Fill a request's ``fields_data`` (protobuf FieldData) with entities [start, stop)."""
        for name, (kind, values) in self.fields.items():
            fd = fields_data.add()
            fd.field_name = name
            fd.type = _PB_TYPES[kind]
            part = values[start:stop]
            if kind == "varchar":
                fd.scalars.string_data.data.extend(part)
            elif kind == "int32":
                fd.scalars.int_data.data.extend(part)
            elif kind == "float":
                fd.vectors.dim = part.shape[1]
                fd.vectors.float_vector.data.extend(np.asarray(part, np.float32).ravel().tolist())
            elif kind == "binary":
                fd.vectors.dim = part.shape[1] * 8
                fd.vectors.binary_vector = np.ascontiguousarray(part, np.uint8).tobytes()
            elif kind == "float16":
                fd.vectors.dim = part.shape[1]
                fd.vectors.float16_vector = np.ascontiguousarray(part, np.float16).tobytes()
            elif kind == "int8":
                fd.vectors.dim = part.shape[1]
                fd.vectors.int8_vector = np.ascontiguousarray(part, np.int8).tobytes()
            else:
                raise ValueError(f"{name}: no column encoding for {kind}")

    def to_arrow(self) -> pa.Table:
        """The entities as an Arrow table in the types Milvus' Parquet import reads (vectors as
        ``list<float32>``, binary vectors as ``list<uint8>``, strings as ``string``)."""
        arrays = {}
        for name, (kind, values) in self.fields.items():
            if kind == "varchar":
                arrays[name] = pa.array(values, pa.string())
            elif kind == "int32":
                arrays[name] = pa.array(values, pa.int32())
            elif kind in ("float", "float16", "binary", "int8"):
                dtype = {"float": np.float32, "float16": np.float32, "binary": np.uint8, "int8": np.int8}[kind]
                block = np.ascontiguousarray(np.asarray(values).astype(dtype))
                width = block.shape[1] if block.ndim == 2 else 0
                offsets = pa.array(np.arange(0, (len(block) + 1) * width, width, dtype=np.int32)[:len(block) + 1])
                arrow_type = {np.float32: pa.float32(), np.uint8: pa.uint8(), np.int8: pa.int8()}[dtype]
                arrays[name] = pa.ListArray.from_arrays(offsets, pa.array(block.ravel(), arrow_type))
            else:
                raise ValueError(f"{name}: Milvus' Parquet import has no form for {kind} fields")
        return pa.table(arrays)


def _row_values(kind: str, values) -> list:
    if kind == "float":
        return values.tolist()
    if kind == "binary":
        return [v.tobytes() for v in values]
    if kind in ("float16", "int8"):
        return list(values)
    return values


def sv_matrix(pages: pa.Table, fp: FieldPlan) -> np.ndarray:
    """A page-level field's float32 vectors; an encoded single vector (sv-mean-int8, ...) decoded."""
    if fp.encoding != "fp32":
        return parse_layout(fp.layout).read_page_vectors(pages)
    col = pages[fp.column].combine_chunks()
    return np.asarray(col.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(col), fp.dim)


def layout_vectors(pages: pa.Table, fp: FieldPlan, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, vectors) of a multi-vector layout column, in the field's Milvus type: packed
    bits for binary, int8 codes for int8, float16 or float32 otherwise (decoded from Parquet)."""
    codec = E.encoding(fp.encoding)
    offsets, stored = codec.read_ragged(pages[fp.column], dim)
    if fp.vtype == EXACT_VTYPE[fp.encoding]:  # the field holds the stored values as they are
        return offsets, stored
    scale = None
    if codec.scale_bytes:
        scale = pages[f"{fp.column}_scale"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    floats = codec.decode(stored, dim, scale)
    return offsets, floats.astype(np.float16 if fp.vtype == "float16" else np.float32)


def patch_index(patch_id: str) -> int:
    """``<page_id>:<index>`` -> index."""
    return int(patch_id.rsplit(":", 1)[1])


def _raw(v) -> bytes | None:
    """pymilvus returns a float16 or binary vector as ``[bytes]`` (or bytes); floats as a list."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (bytes, bytearray)):
        return bytes(v[0])
    return None


def from_milvus(rows: list, fp: FieldPlan) -> np.ndarray:
    """Vectors read back from Milvus as float32 (binary decodes to +-1, like the Parquet layout)."""
    if fp.vtype == "binary":
        return E.binary_decode(np.stack([np.frombuffer(_raw(r), np.uint8) for r in rows]), fp.dim)
    if fp.vtype in ("float16", "int8"):
        dtype = np.float16 if fp.vtype == "float16" else np.int8
        return np.stack([np.frombuffer(_raw(r), dtype) if _raw(r) is not None else np.asarray(r, dtype)
                         for r in rows]).astype(np.float32)
    return np.asarray(rows, np.float32)
