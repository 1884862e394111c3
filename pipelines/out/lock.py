"""One run per output root at a time: a lock object with a lease, safe on object stores.

``OUT/_lock.json`` names its holder (host, pid, run id) and when its lease expires. A run renews
the lease from a heartbeat thread while it works and deletes the lock at the end; a run that
died leaves a lock that expires, or that a run on the same host takes over at once when the
holder's process is gone (pid and start time, so a reused pid does not count). Object stores here have no compare-and-swap, so after
writing the lock a run reads it back and gives up if another run's token is there (two runs
starting within the same instant both read the later write: one of them refuses).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from operators.io.store import OutputStore
from pipelines.out.keys import LOCK_KEY


class LockError(Exception):
    """Another run holds the output root."""


class RunLock:
    def __init__(self, store: OutputStore, run_id: str, lease_s: float = 300.0):
        self.store = store
        self.run_id = run_id
        self.lease_s = lease_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    def _read(self) -> dict | None:
        try:
            return json.loads(self.store.read_bytes(LOCK_KEY))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _write(self) -> None:
        now = time.time()
        self.store.write_bytes(LOCK_KEY, json.dumps({
            "token": self.token, "run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
            "pid_started": _started(os.getpid()), "renewed_at": now, "expires_at": now + self.lease_s}).encode())

    @staticmethod
    def _holder_dead(holder: dict) -> bool:
        """A holder on this host whose process is gone (or is another process with its pid)."""
        if holder.get("host") != socket.gethostname() or not holder.get("pid"):
            return False
        started = _started(int(holder["pid"]))
        return started is None or abs(started - float(holder.get("pid_started") or 0)) > 1.0

    def _refuse(self, holder: dict) -> LockError:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder["expires_at"]))
        return LockError(f"another pagemill run holds {self.store.uri} (run {holder.get('run_id')}, host "
                         f"{holder.get('host')}, pid {holder.get('pid')}); its lease ends at {until} unless it "
                         f"renews it. If that run is dead, wait for the lease to end or delete {LOCK_KEY}")

    def acquire(self) -> None:
        holder = self._read()
        if (holder and holder.get("token") != self.token and holder.get("expires_at", 0) > time.time()
                and not self._holder_dead(holder)):
            raise self._refuse(holder)
        self._write()
        back = self._read()
        if not back or back.get("token") != self.token:
            raise self._refuse(back or {"expires_at": time.time() + self.lease_s})
        self._thread = threading.Thread(target=self._heartbeat, name="pagemill-lock", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            holder = self._read()
            if holder and holder.get("token") != self.token:
                self.lost = f"run {holder.get('run_id')} took over the lock"
                return
            try:
                self._write()
            except Exception as e:  # a failed renewal is retried at the next beat
                self.lost = f"cannot renew the lock: {e}"

    def check(self) -> None:
        """Called before each commit: a run that lost its lock must not commit."""
        if self.lost and (holder := self._read()) and holder.get("token") != self.token:
            raise LockError(f"lost the lock on {self.store.uri}: {self.lost}")

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        holder = self._read()
        if holder and holder.get("token") == self.token:
            self.store.delete(LOCK_KEY)


def _started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
