"""The run lock on OUT: one creator wins a race (S3 conditional writes over HTTP, a local folder),
a holder that is provably gone (its process on this host, its Ray job) is taken over at once, one
that cannot be checked is waited for until its lease ends, and a live one refuses the new run
with one line naming it. Holders are real processes, killed with SIGKILL."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import REPO, s3_client

from operators.io.s3 import S3Options, S3Store
from operators.io.store import LocalStore
from pipelines.executors import holder_checks
from pipelines.out.keys import LOCK_KEY
from pipelines.out.lock import LockError, RunLock

# A run that takes the lock and keeps it (renewing) until it is killed. ``host`` other than "-"
# makes it another node as far as the lock can tell; ``ray`` joins that cluster first and records
# its Ray job as an ingest run does once Ray has started.
HOLDER = """
import json, socket, sys, time
out, run_id, lease, host, ray_address = sys.argv[1:6]
from operators.io.store import LocalStore
from pipelines.out.lock import RunLock
executor = None
if ray_address != "-":
    from pipelines.executors.ray_executor import RayExecutor
    executor = RayExecutor(address=ray_address)
    executor.start()
if host != "-":
    socket.gethostname = lambda: host
lock = RunLock(LocalStore(out), run_id, lease_s=float(lease))
lock.acquire()
if executor is not None:
    lock.record(ray=executor.holder_identity())
print(json.dumps(lock.about.get("ray") or {}), flush=True)
time.sleep(600)
"""


def start_holder(out, run_id: str, lease_s: float = 60, host: str = "-", ray_address: str = "-",
                 timeout_s: float = 120):
    """A holder process, once it holds the lock: (process, the Ray job it recorded)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), run_id, str(lease_s), host, ray_address],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout_s):
        proc.kill()
        pytest.fail(f"the holder did not take the lock within {timeout_s} s")
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"the holder died: {proc.stderr.read()[-2000:]}")
    return proc, json.loads(line)


def kill(proc) -> float:
    """SIGKILL, reaped; the moment it was sent (monotonic)."""
    t = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return t


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


# -- one creator wins ------------------------------------------------------------------------------


def race(make_store) -> None:
    n = 8
    barrier = threading.Barrier(n)
    held, refused = [], []

    def run(i: int):
        lock = RunLock(make_store(), f"racer-{i}", lease_s=60)
        barrier.wait()
        try:
            lock.acquire()
            held.append(lock)
        except LockError as e:
            refused.append(str(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(held) == 1 and len(refused) == n - 1, (held, refused)
    winner = held[0]
    try:
        assert json.loads(winner.store.read_bytes(LOCK_KEY))["token"] == winner.token
        for line in refused:  # each loser names the winner and why it is not taken over
            assert f"run {winner.run_id}," in line and f"pid {os.getpid()} is alive on this host" in line, line
    finally:
        winner.release()
    assert not winner.store.exists(LOCK_KEY)


def test_eight_runs_racing_on_s3_one_holds_the_lock(s3_endpoint):
    bucket = f"lock-{uuid.uuid4().hex[:8]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    race(lambda: S3Store(f"s3://{bucket}/out/", S3Options(endpoint_url=s3_endpoint)))


def test_eight_runs_racing_on_a_local_folder_one_holds_the_lock(tmp_path):
    race(lambda: LocalStore(tmp_path / "out"))


def conditional_writes(store) -> None:
    first = store.create_exclusive("k.json", b"one")
    assert first and store.create_exclusive("k.json", b"two") is None
    assert store.read_versioned("k.json") == (b"one", first)
    second = store.replace_if("k.json", b"three", first)
    assert second and second != first
    assert store.replace_if("k.json", b"four", first) is None  # a stale version is refused
    assert store.delete_if("k.json", first) is False and store.read_bytes("k.json") == b"three"
    assert store.delete_if("k.json", second) is True and not store.exists("k.json")
    assert store.replace_if("k.json", b"five", second) is None  # nor is an absent object replaced


def test_conditional_writes_on_s3(s3_endpoint):
    bucket = f"cond-{uuid.uuid4().hex[:8]}"
    s3_client(s3_endpoint).create_bucket(Bucket=bucket)
    conditional_writes(S3Store(f"s3://{bucket}/out/", S3Options(endpoint_url=s3_endpoint)))


def test_conditional_writes_on_a_local_folder(tmp_path):
    store = LocalStore(tmp_path / "out")
    conditional_writes(store)
    assert store.list("") == []  # no temporary file left, the guard file is hidden


# -- taken over, waited for, refused ---------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_holder_on_this_host_is_taken_over_at_once(tmp_path):
    out = tmp_path / "out"
    proc, _ = start_holder(out, "dead-run")
    with pytest.raises(LockError) as e:
        RunLock(LocalStore(out), "retry").acquire()
    line = one_line(e)
    assert line.startswith(f"another pagemill run holds {LocalStore(out).uri} (run dead-run, host ")
    assert f"pid {proc.pid} is alive on this host" in line
    killed = kill(proc)
    said = []
    lock = RunLock(LocalStore(out), "retry", say=said.append)
    lock.acquire()
    waited = time.monotonic() - killed
    lock.release()
    assert said == [f"took over the lock on {LocalStore(out).uri} from run dead-run (pid {proc.pid} is gone from "
                    f"this host)"]
    assert waited < 5, waited
    print(f"\nsame host: the retry held the lock {waited * 1000:.0f} ms after SIGKILL")


@pytest.mark.slow
def test_a_holder_on_another_host_is_waited_for_and_taken_over_when_its_lease_ends(tmp_path):
    out = tmp_path / "out"
    lease = 4.0
    proc, _ = start_holder(out, "dead-run", lease_s=lease, host="node-2")
    killed = kill(proc)
    said = []
    lock = RunLock(LocalStore(out), "retry", say=said.append)
    lock.acquire()  # nothing proves it gone: wait, no refusal
    waited = time.monotonic() - killed
    lock.release()
    assert "held by run dead-run, host node-2, pid" in said[0] and "host node-2 is not this one" in said[0]
    assert "waiting up to" in said[0]
    assert said[-1].endswith("from run dead-run (its lease had ended)")
    # the lease was renewed at most lease/4 before the kill; the wait reads the lock every 2 s
    assert lease * 3 / 4 - 1 < waited < lease + 3, waited
    print(f"\nanother host, lease {lease:.0f} s: the retry held the lock {waited:.1f} s after SIGKILL")


@pytest.mark.slow
def test_a_live_holder_on_another_host_refuses_once_it_is_seen_renewing(tmp_path):
    out = tmp_path / "out"
    proc, _ = start_holder(out, "live-run", lease_s=4, host="node-2")
    try:
        t = time.monotonic()
        with pytest.raises(LockError) as e:
            RunLock(LocalStore(out), "second").acquire()
        took = time.monotonic() - t
    finally:
        kill(proc)
    line = one_line(e)
    assert f"(run live-run, host node-2, pid {proc.pid}): host node-2 is not this one, so its pid was not checked; it " \
           f"renewed its lease while this run waited" in line, line
    assert took < 4, took  # a renewal (every lease/4) is seen before the lease would end


def test_an_expired_lease_is_taken_over_and_its_old_holder_may_not_commit(tmp_path):
    store = LocalStore(tmp_path / "out")
    old = RunLock(store, "stalled-run", lease_s=60)
    old.acquire()
    old._stop.set()  # its heartbeat stalls (a paused process, an unreachable store)
    lock = json.loads(store.read_bytes(LOCK_KEY))
    lock["expires_at"] = time.time() - 1
    store.write_bytes(LOCK_KEY, json.dumps(lock).encode())
    said = []
    new = RunLock(store, "retry", say=said.append)
    new.acquire()  # the holder's pid is alive, but its lease has ended
    assert said[-1].endswith("from run stalled-run (its lease had ended)")
    old.expires_at = time.time() - 1  # as it is for the stalled run when it wakes up
    with pytest.raises(LockError, match="lost the lock on .*: run retry, host .* took over the lock"):
        old.check()
    new.check()
    new.release()
    assert not store.exists(LOCK_KEY)


@pytest.mark.slow
def test_a_holder_whose_ray_job_finished_is_taken_over_at_once(ray_address, tmp_path):
    out = tmp_path / "out"
    # On another host, so that its pid proves nothing: only its Ray job can.
    proc, job = start_holder(out, "ray-run", host="node-2", ray_address=ray_address)
    assert job["job"] and job["cluster"] and job["gcs"]
    with pytest.raises(LockError) as e:
        RunLock(LocalStore(out), "retry", checks=holder_checks()).acquire()
    line = one_line(e)
    assert f"Ray job {job['job']}): host node-2 is not this one, so its pid was not checked; Ray job {job['job']} is " \
           f"running on the Ray cluster at {job['gcs']}" in line, line
    killed = kill(proc)
    said = []
    deadline = killed + 30
    while True:  # the cluster marks the job finished once its raylet sees the driver gone
        try:
            lock = RunLock(LocalStore(out), "retry", checks=holder_checks(), say=said.append)
            lock.acquire()
            break
        except LockError:
            if time.monotonic() > deadline:
                raise
    waited = time.monotonic() - killed
    lock.release()
    assert said[-1] == (f"took over the lock on {LocalStore(out).uri} from run ray-run (Ray job {job['job']} has "
                        f"finished on the Ray cluster at {job['gcs']})")
    assert waited < 10, waited
    print(f"\nfinished Ray job: the retry held the lock {waited * 1000:.0f} ms after SIGKILL")


def test_a_ray_job_on_a_cluster_that_does_not_answer_proves_nothing(tmp_path):
    from pipelines.executors.ray_executor import ray_job_verdict

    verdict = ray_job_verdict({"gcs": "127.0.0.1:9", "cluster": "00" * 28, "job": "05000000"})
    assert verdict.gone is None and verdict.said == "Ray job 05000000 not checked: no Ray cluster answers at 127.0.0.1:9"
