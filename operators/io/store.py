"""The output root (``OUT``): small atomic object writes, listings and deletes.

Everything pagemill writes under ``OUT`` goes through this interface, so that the ledger, the
shards and the run summaries work the same on a local disk and on an object store (which has
atomic whole-object PUTs but no rename).
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from operators.errors import UsageError


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()  # as S3's etag of a single PUT


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # (a read-only file system refuses even that)


class StoreError(Exception):
    """The output root cannot be used (not writable, full disk, bad URI)."""


@dataclass(frozen=True)
class StoredObject:
    key: str  # path relative to the root, with '/' separators
    size: int


class OutputStore:
    """Interface for the output root. Keys are relative, '/'-separated."""

    uri: str

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object atomically: readers see the old object or the new one, never part."""
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def list(self, prefix: str) -> list[StoredObject]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    # Conditional writes: what a lock needs (one creator wins; a renewal or a takeover applies only
    # to the version it read). An etag names one version of an object's bytes.

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and its etag (FileNotFoundError when absent)."""
        raise NotImplementedError

    def create_exclusive(self, key: str, data: bytes) -> str | None:
        """Create the object only if it does not exist: its etag, or None when it exists."""
        raise NotImplementedError

    def replace_if(self, key: str, data: bytes, etag: str) -> str | None:
        """Replace the object only if it is still the version ``etag``: the new etag, else None."""
        raise NotImplementedError

    def delete_if(self, key: str, etag: str) -> bool:
        """Delete the object only if it is still the version ``etag``."""
        raise NotImplementedError

    def local_path(self, key: str) -> str | None:
        """A filesystem path for the key when the store is local, else None."""
        return None

    def open_input(self, key: str):
        """Something pyarrow reads ranges of (a Parquet footer, a column chunk) without fetching
        the whole object: a path here, a seekable reader of ranged GETs on an object store."""
        import io

        return self.local_path(key) or io.BytesIO(self.read_bytes(key))

    def check(self) -> None:
        """Fail fast if the root cannot be used (called before any work)."""


class LocalStore(OutputStore):
    def check(self) -> None:
        """A folder that can be written: created if missing; a file in its place, or a folder
        that cannot be written (a read-only mount, permissions), is the user's to fix."""
        if self.root.exists() and not self.root.is_dir():
            raise UsageError(f"{self.root} is a file, not a folder: --out names the folder a run writes its index to")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise UsageError(f"cannot create output folder {self.root}: {e.strerror} (choose another --out)") from None
            raise StoreError(f"cannot create output folder {self.root}: {e.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            why = "a read-only file system" if _read_only_mount(self.root) else "no write permission"
            raise UsageError(f"cannot write to output folder {self.root}: {why} (choose another --out, or make it "
                             f"writable)")

    def __init__(self, root: str | os.PathLike, create: bool = True):
        """``create``: make the folder now (an output about to be written); readers pass False
        and create nothing."""
        self.root = Path(root).resolve()
        self.uri = self.root.as_uri()
        if not create:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create output folder {self.root}: {e.strerror}") from None

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _staged(self, path: Path, data: bytes) -> Path:
        """``data`` in a hidden temporary file next to ``path``, on disk (listings skip it)."""
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            _unlink_quietly(tmp)
            raise
        return tmp

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            self._replace(path, data)
        except OSError as e:
            raise StoreError(f"cannot write {path}: {e.strerror or e}") from None

    def _replace(self, path: Path, data: bytes) -> None:
        tmp = self._staged(path, data)
        try:
            os.replace(tmp, path)
        except OSError:
            _unlink_quietly(tmp)
            raise

    def read_versioned(self, key: str) -> tuple[bytes, str]:
        data = self._path(key).read_bytes()
        return data, _etag(data)

    def create_exclusive(self, key: str, data: bytes) -> str | None:
        # A hard link of a complete file: created only if absent (as O_CREAT|O_EXCL) and never
        # seen half written.
        path = self._path(key)
        try:
            tmp = self._staged(path, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return None
            finally:
                _unlink_quietly(tmp)
        except OSError as e:
            raise StoreError(f"cannot create {path}: {e.strerror or e}") from None
        return _etag(data)

    @contextmanager
    def _guarded(self, path: Path):
        """Compare-then-rename made atomic among processes: an exclusive flock on a hidden file
        beside ``path`` (flock works on local disks and NFS)."""
        import fcntl

        fd = os.open(path.with_name(f".{path.name}.guard"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the flock

    def _is_version(self, path: Path, etag: str) -> bool:
        try:
            return _etag(path.read_bytes()) == etag
        except FileNotFoundError:
            return False

    def replace_if(self, key: str, data: bytes, etag: str) -> str | None:
        path = self._path(key)
        try:
            with self._guarded(path):
                if not self._is_version(path, etag):
                    return None
                self._replace(path, data)
        except OSError as e:
            raise StoreError(f"cannot write {path}: {e.strerror or e}") from None
        return _etag(data)

    def delete_if(self, key: str, etag: str) -> bool:
        path = self._path(key)
        try:
            with self._guarded(path):
                if not self._is_version(path, etag):
                    return False
                path.unlink()
        except OSError as e:
            raise StoreError(f"cannot delete {path}: {e.strerror or e}") from None
        return True

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def list(self, prefix: str) -> list[StoredObject]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                if name.startswith("."):
                    continue  # temp files of in-flight writes
                p = Path(dirpath, name)
                try:
                    size = p.stat().st_size
                except FileNotFoundError:
                    continue
                out.append(StoredObject(p.relative_to(self.root).as_posix(), size))
        return out

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def local_path(self, key: str) -> str:
        return str(self._path(key))
