"""One run per output root at a time: a lock object with a lease, created and renewed by
conditional writes.

``OUT/_lock.json`` names its holder (run id, host, pid, and where known its Kubernetes pod and
Ray job) and when its lease ends. The lock is created only if absent (S3 ``If-None-Match: *``, a
hard link on a local disk), so of two runs starting at once exactly one holds it. The holder
renews it every lease/4 from a heartbeat thread, each renewal conditional on the version it
wrote (``If-Match``), and deletes it at the end.

A run that finds the lock held takes it over (again conditionally on the version it read) when
the lease has ended, or at once when the holder is provably gone: a process on this host that
no longer exists (pid and start time, so a reused pid does not count), or a Ray job that has
finished (that check is the caller's: ``checks``). A holder proven alive refuses the new run at
once, with one line that says who holds the lock and what was checked. One that cannot be
checked is waited for: the run reads the lock every few seconds until the lease ends (then takes
over), and refuses as soon as it sees the holder renew; so a retry that starts right after its
driver died waits at most one lease instead of failing.

>>> lock = RunLock(LocalStore("/tmp/out"), "20261203T000000Z-abcdef")  # doctest: +SKIP
>>> lock.acquire(); ...; lock.release()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from operators.io.store import OutputStore
from pipelines.out.keys import LOCK_KEY

DEFAULT_LEASE_S = 60.0
# Renewals per lease: three may fail in a row (a store retrying with backoff) before it ends.
RENEWALS_PER_LEASE = 4
WATCH_EVERY_S = 2.0  # how often a run waiting on a lock reads it again


class LockError(Exception):
    """Another run holds the output root."""


@dataclass(frozen=True)
class Verdict:
    """What one check found about a recorded holder: ``gone`` True (provably gone), False
    (provably alive) or None (cannot tell); ``said``: what was checked, in words."""

    gone: bool | None
    said: str


# A check takes the holder's record and answers a Verdict, or None when it does not apply.
HolderCheck = Callable[[dict], "Verdict | None"]


def same_host_process(holder: dict) -> Verdict:
    """A holder on this host is alive while its process is (same pid, same start time)."""
    host, pid = holder.get("host"), holder.get("pid")
    if host != socket.gethostname() or not pid:
        return Verdict(None, f"host {host} is not this one, so its pid was not checked")
    started = _started(int(pid))
    if started is None or abs(started - float(holder.get("pid_started") or 0)) > 1.0:
        return Verdict(True, f"pid {pid} is gone from this host")
    return Verdict(False, f"pid {pid} is alive on this host")


def pod_identity() -> dict:
    """The Kubernetes pod this process runs in ({} outside Kubernetes)."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return {}
    namespace = os.environ.get("POD_NAMESPACE")
    if not namespace:
        try:
            with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
                namespace = f.read().strip()
        except OSError:
            namespace = None
    return {"name": os.environ.get("POD_NAME") or socket.gethostname(), "namespace": namespace}


class RunLock:
    """``checks``: what else proves a holder gone (its Ray job); ``say``: where a wait is told."""

    def __init__(self, store: OutputStore, run_id: str, lease_s: float = DEFAULT_LEASE_S,
                 checks: tuple[HolderCheck, ...] = (), say: Callable[[str], None] | None = None,
                 about: dict | None = None):
        self.store = store
        self.run_id = run_id
        self.lease_s = lease_s
        self.renew_every_s = lease_s / RENEWALS_PER_LEASE
        self.checks = (same_host_process, *checks)
        self.say = say or (lambda line: None)
        self.token = uuid.uuid4().hex
        self.about = {"pod": pod_identity(), **(about or {})}  # recorded with host and pid
        self.etag: str | None = None  # the version of the lock this run wrote last
        self.expires_at = 0.0
        self.took_over: str | None = None  # whose lock this run took over, and why
        self._mutex = threading.Lock()  # the heartbeat and renew() write in turn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None

    # -- the record ------------------------------------------------------------------------------

    def _record(self) -> tuple[bytes, float]:
        """The lock's bytes, and when the lease they grant ends."""
        now = time.time()
        return json.dumps({
            "token": self.token, "run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
            "pid_started": _started(os.getpid()), **{k: v for k, v in self.about.items() if v},
            "renewed_at": now, "expires_at": now + self.lease_s, "lease_s": self.lease_s,
            "renew_every_s": self.renew_every_s}).encode(), now + self.lease_s

    def _read(self) -> tuple[dict, str] | None:
        """The lock as found, with its etag; a lock that is not JSON reads as {}."""
        try:
            data, etag = self.store.read_versioned(LOCK_KEY)
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(data)
        except ValueError:
            holder = {}
        return (holder if isinstance(holder, dict) else {}), etag


    # -- acquire ---------------------------------------------------------------------------------

    def acquire(self) -> None:
        watched: tuple[str, str, float] | None = None  # a holder waited on: (token, etag first seen, since)
        races = 0
        while races < 50:  # a race is a write that another run's write beat
            data, expires = self._record()
            etag = self.store.create_exclusive(LOCK_KEY, data)
            if etag:
                return self._start(etag, expires)
            found = self._read()
            if found is None:
                races += 1  # released meanwhile
                continue
            holder, etag = found
            if holder.get("token") == self.token:  # our create, answered 412 on a retried request
                return self._start(etag, expires)
            verdicts = [v for check in self.checks if (v := _safe(check, holder))]
            why = self._takeover_reason(holder, verdicts)
            if why:
                data, expires = self._record()
                new = self.store.replace_if(LOCK_KEY, data, etag)
                if new:
                    self.took_over = f"run {holder.get('run_id')} ({why})"
                    self.say(f"took over the lock on {self.store.uri} from {self.took_over}")
                    return self._start(new, expires)
                races += 1
                continue
            if any(v.gone is False for v in verdicts):
                raise self._refuse(holder, verdicts)
            if watched and watched[0] == holder.get("token"):
                if watched[1] != etag:
                    raise self._refuse(holder, verdicts, f"it renewed its lease while this run waited "
                                                         f"{time.monotonic() - watched[2]:.0f} s")
            else:
                watched = (holder.get("token"), etag, time.monotonic())
                left = float(holder.get("expires_at", 0)) - time.time()
                self.say(f"the lock on {self.store.uri} is held by {_name(holder)}, not provably gone "
                         f"({'; '.join(v.said for v in verdicts)}): waiting up to {left:.0f} s for its lease to "
                         f"end, unless it renews it")
            # Until the lease ends, or sooner: a renewal (the holder is alive) or a release.
            time.sleep(min(WATCH_EVERY_S, max(0.0, float(holder.get("expires_at", 0)) - time.time()) + 0.1))
        raise LockError(f"cannot take the lock on {self.store.uri}: other runs kept changing it")

    @staticmethod
    def _takeover_reason(holder: dict, verdicts: list[Verdict]) -> str | None:
        if not holder.get("token"):
            return "an unreadable lock"
        if float(holder.get("expires_at", 0)) <= time.time():
            return "its lease had ended"
        if any(v.gone is False for v in verdicts):
            return None
        return next((v.said for v in verdicts if v.gone), None)

    def _refuse(self, holder: dict, verdicts: list[Verdict], seen: str = "") -> LockError:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(holder.get("expires_at", 0))))
        checked = "; ".join([v.said for v in verdicts] + ([seen] if seen else [])) or "nothing could be checked"
        return LockError(f"another pagemill run holds {self.store.uri} ({_name(holder)}): {checked}; its lease "
                         f"ends at {until} unless it renews it. If that run is dead, wait for the lease to end or "
                         f"delete {LOCK_KEY}")

    # -- hold ------------------------------------------------------------------------------------

    def _start(self, etag: str, expires: float) -> None:
        self.etag, self.expires_at = etag, expires
        self._thread = threading.Thread(target=self._heartbeat, name="pagemill-lock", daemon=True)
        self._thread.start()

    def record(self, **about) -> None:
        """Add to what the lock says about this run (its Ray job, once Ray has started) and
        write it now."""
        self.about.update(about)
        self.renew()

    def renew(self) -> bool:
        """Extend the lease now, conditionally on the version this run wrote last; False (and
        ``lost`` says why) when it is no longer this run's."""
        with self._mutex:
            if self.etag is None:
                return False
            data, expires = self._record()
            try:
                new = self.store.replace_if(LOCK_KEY, data, self.etag)
                found = None if new else self._read()
            except Exception as e:  # a failed renewal is retried at the next beat
                self.lost = f"cannot renew the lock: {e}"
                return False
            if found and found[0].get("token") == self.token:  # our write, answered 412 on a retry
                new = found[1]
            if new:
                self.etag, self.expires_at, self.lost = new, expires, None
                return True
            self.lost = f"{_name(found[0])} took over the lock" if found else "the lock was deleted"
            self.etag = None
            return False

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.renew_every_s):
            if not self.renew() and self.etag is None:
                return

    def check(self) -> None:
        """Called before each commit: a run that lost its lock, or cannot show it still holds it
        once the lease it was granted has ended (its renewals failed), must not commit."""
        if self.etag is not None and time.time() < self.expires_at:
            return  # a renewal that failed is retried by the heartbeat while the lease lasts
        if not self.renew():
            raise LockError(f"lost the lock on {self.store.uri}: {self.lost}")

    def release(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self._mutex:
            found = self._read()
            if not found or found[0].get("token") != self.token:
                return
            try:
                self.store.delete_if(LOCK_KEY, found[1])
            except Exception:  # a store without conditional deletes: the lock was this run's a moment ago
                self.store.delete(LOCK_KEY)
            self.etag = None


def _name(holder: dict) -> str:
    parts = [f"run {holder.get('run_id')}", f"host {holder.get('host')}", f"pid {holder.get('pid')}"]
    if pod := holder.get("pod"):
        parts.append(f"pod {pod.get('namespace')}/{pod.get('name')}")
    if ray := holder.get("ray"):
        parts.append(f"Ray job {ray['job']}" if ray.get("job") else f"Ray job submission {ray.get('submission')}")
    return ", ".join(parts)


def _safe(check: HolderCheck, holder: dict) -> Verdict | None:
    try:
        return check(holder)
    except Exception as e:  # a check that fails proves nothing
        return Verdict(None, f"a check failed ({type(e).__name__}: {e})")


def _started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
