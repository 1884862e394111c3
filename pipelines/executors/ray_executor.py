"""Ray Data executor: the one module that imports Ray (its types change between releases).

One streaming dataset per run: the plan file (``OUT/_runs/<run>/plan/``) is read by a datasource,
then each stage is a pool of actors: render (CPU; each owns a MuPDF child), the model stages
(one actor per GPU, ``num_gpus`` each, so Ray pins every actor to its own device), encode (CPU:
pooling, encodings, FDE) and the writers (CPU, on the workers: Parquet parts and vector-store rows).
The driver reads only the writers' small results and commits units as they complete, so models
load once per run, rendering, embedding, encoding, writing and committing overlap, and memory
follows the units in flight (an object-store budget bounds what waits between stages).

Writes stay in one process on the driver's node where workers cannot do them: a vector store that
is one process' database file (Milvus Lite: the driver writes, as the local executor does), and a
local OUT on a multi-node cluster is reachable from the driver's node only (one writer there).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable
from itertools import islice

from operators.errors import UsageError
from operators.faults import checkpoint
from pipelines.executors.base import (
    ENCODE_CPUS,
    HEADROOM_CPUS,
    MIN_RENDER_CPUS,
    MODEL_CPUS,
    READ_CPUS,
    WRITE_CPUS,
    Executor,
    Pipeline,
    UnitTracker,
)
from pipelines.out.units import WorkUnit, read_plan_part

try:
    import ray
    from ray.data import ActorPoolStrategy, DataContext
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask
except ImportError as e:  # pragma: no cover - ray is a declared dependency
    raise ImportError("the Ray executor needs Ray Data: pip install 'ray[data]'") from e



class PlanDatasource(Datasource):
    """The run's plan file parts, one read task each, read through pagemill's own store (local
    folder or S3, with the worker's credentials)."""

    def __init__(self, store, keys: list[str]):
        self.store = store
        self.keys = keys

    def estimate_inmemory_data_size(self):
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list:
        tasks = []
        for key in self.keys:
            def read(key=key, store=self.store):
                yield read_plan_part(store, key)

            tasks.append(ReadTask(read, BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)))
        return tasks


class _ProgressBoard:
    """Live counters of every worker of the run (for the driver's heartbeat): workers report
    without waiting for an answer, the driver reads the sums."""

    def __init__(self):
        self.pages: dict[tuple[str, str], int] = {}

    def report(self, stage: str, worker: str, pages: int) -> None:
        self.pages[(stage, worker)] = max(pages, self.pages.get((stage, worker), 0))

    def totals(self) -> dict:
        out: dict[str, int] = {}
        for (stage, _), n in self.pages.items():
            out[stage] = out.get(stage, 0) + n
        return out


class _StageActor:
    """One worker of a stage: the operator, set up once (a model loads once per actor)."""

    REPORT_EVERY_S = 1.0

    def __init__(self, op, board=None):
        self.op = op
        self.board = board
        self._reported = 0.0
        self.worker = f"{os.uname().nodename}:{os.getpid()}"
        labels = {"node_id": ray.get_runtime_context().get_node_id()}
        counters = getattr(op, "counters", None)
        if counters is not None:
            counters.labels.update(labels)
        self.op.setup()

    def __call__(self, batch):
        checkpoint(f"{self.op.name}_call")
        out = self.op(batch)
        now = time.monotonic()
        if self.board is not None and now - self._reported >= self.REPORT_EVERY_S:
            self._reported = now
            self.board.report.remote(self.op.name, self.worker, self.op.stats.get("pages", 0))  # no wait
        return out


_ERROR_LINE = re.compile(r"^\s*((?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))): (.+)$")


def worker_error(e: BaseException) -> Exception:
    """The root cause of an error raised in a worker (an actor's set-up, a stage's batch), as the
    exception pagemill itself would raise in the driver: Ray wraps it (ActorDiedError,
    RayTaskError) with tracebacks and ANSI colours around the one line that says what happened."""
    from operators.io.sources import SourceError
    from operators.io.store import StoreError
    from operators.models import ModelError
    from operators.stores.door import VectorStoreError

    # pagemill's own errors, by name (a store's own kinds of VectorStoreError included)
    def family(cls):
        return [cls] + [sub for c in cls.__subclasses__() for sub in family(c)]

    kinds = {cls.__name__: cls for cls in (ModelError, SourceError, StoreError, UsageError, *family(VectorStoreError))}
    chain, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:  # Ray Data chains the user's error as the cause
        seen.add(id(cur))
        chain.append(cur)
        cur = getattr(cur, "cause", None) if isinstance(getattr(cur, "cause", None), BaseException) else \
            (cur.__cause__ or cur.__context__)
    for inner in reversed(chain):  # the innermost that is pagemill's own
        if type(inner).__name__ in kinds:
            return kinds[type(inner).__name__](str(inner).strip().splitlines()[0])
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(str(c) for c in chain))
    found = [m for m in map(_ERROR_LINE.match, text.splitlines()) if m and m.group(2) not in (
        "ActorDiedError", "RayTaskError", "RayActorError", "ActorUnavailableError", "UserCodeException")]
    if not found:
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        return WorkerError(f"a Ray worker failed: {type(e).__name__}: {first[:300]}")
    name, message = found[-1].group(2), found[-1].group(3).strip()
    if name in kinds and name != "UsageError":
        return kinds[name](message)
    return WorkerError(f"a Ray worker failed: {name}: {message[:300]}")


class WorkerError(RuntimeError):
    """An error in a worker, reduced to its root cause."""


class RayStartError(RuntimeError):
    """A local Ray did not come up."""


def _first(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """A cluster address must answer a TCP connection within seconds: ``ray.init`` itself retries
    a wrong address for minutes."""
    import socket

    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except ValueError:
        raise UsageError(f"--ray-address {address!r}: expected HOST:PORT (or auto)") from None
    except OSError as e:
        raise UsageError(f"--ray-address {address}: nothing answers there ({type(e).__name__}: {e}): check the "
                         f"address, or leave it out to start a local Ray") from None


def _node_rotation():
    from itertools import cycle

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = cycle(sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")))
    return lambda: {"scheduling_strategy": NodeAffinitySchedulingStrategy(next(nodes), soft=True)}


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, num_gpus: float | None = None, embed_actors: int | None = None,
                 render_actors: int | None = None, object_store_mb: float | None = None,
                 encode_actors: int | None = None, write_actors: int | None = None, write_placement: str = "auto",
                 out_is_local: bool = True, single_process_store: str | None = None, log=None):
        """``single_process_store``: what the vector store is, when it is one process' database
        file (its writes then run in the driver)."""
        self.address = address
        self.num_gpus = num_gpus
        self.embed_actors = embed_actors
        self.render_actors = render_actors
        self.encode_actors = encode_actors
        self.write_actors = write_actors
        self.object_store_mb = object_store_mb
        self.write_placement = write_placement
        self.out_is_local = out_is_local
        self.single_process_store = single_process_store
        self.log = log
        self._started_here = False
        self.placement: dict | None = None

    def _init(self) -> None:
        if ray.is_initialized():
            return
        kwargs = dict(logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
        if self.address:
            check_address(self.address)
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError) as e:
                raise UsageError(f"--ray-address {self.address}: no Ray cluster answers there ({_first(e)}): check the "
                                 f"address, or leave it out to start a local Ray") from None
        else:
            # A private local cluster. Without an address Ray would join the cluster a `ray start`
            # on this machine last recorded (/tmp/ray/ray_current_cluster), or RAY_ADDRESS: a
            # stranger's cluster, or, where that file outlived its cluster, an address nothing
            # answers at, where ray.init waits for ever. "local" always starts one.
            os.environ.pop("RAY_ADDRESS", None)
            try:
                ray.init(address="local", **kwargs)
            except Exception as e:
                raise RayStartError(f"Ray could not start on this machine ({_first(e)}): run with --executor local, or "
                                    f"start Ray yourself (ray start --head) and pass --ray-address") from None
            self._started_here = True

    def start(self) -> None:
        """Connect (or start a local Ray) and decide where writes happen; say so."""
        self._init()
        self.placement = self._placement()

    def _placement(self) -> dict:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        driver_node = ray.get_runtime_context().get_node_id()
        if self.write_placement == "driver" or (self.write_placement == "auto" and self.single_process_store):
            why = (f"{self.single_process_store} is a single-process database file"
                   if self.single_process_store and self.write_placement == "auto" else "--write-placement driver")
            return {"where": "driver", "why": why, "driver_node": driver_node}
        if self.write_placement == "auto" and self.out_is_local and len(nodes) > 1:
            return {"where": "driver_node", "why": f"OUT is a local folder and the cluster has {len(nodes)} nodes: "
                    f"only the driver's node can reach it", "driver_node": driver_node}
        return {"where": "workers", "why": "writer actors on the workers", "driver_node": driver_node}

    PLACEMENT_WORDS = {"driver": "in the driver", "driver_node": "one writer on the driver's node",
                       "workers": "on the workers"}

    def starting(self) -> str:
        where = f"Ray at {self.address}" if self.address else "a local Ray (--ray-address joins a cluster)"
        return f"{where}, then the stages' actors (each loads its model once)"

    def feed(self, units, out, run_id: str, listed, say, models: str = ""):
        """The units planned to a plan file (``OUT/_runs/<run>/plan/``) that the run's dataset
        reads in bounded memory; Ray starts only when there is work, and says where writes run."""
        from pipelines.out.units import PlanFile

        plan = PlanFile(out, run_id)
        for unit in units:
            plan.add(unit)
        plan.close()
        listed(plan.units)
        if plan.units:
            say(f"starting: {self.starting()}; models: {models}")
            self.start()
            say(f"writes: {self.PLACEMENT_WORDS[self.placement['where']]} ({self.placement['why']})")
        return iter(()), plan

    def resources(self, pipeline: Pipeline) -> dict:
        """Actors and per-actor resources of every stage, from the cluster. The model stages take
        the accelerators (one actor per GPU each; a GPU shared by the model stages when there are
        several); encode and write take fractions of a CPU; render gets the CPUs left. Logical CPU
        requests must fit the cluster, or Ray Data cannot schedule every pool."""
        total = ray.cluster_resources()
        gpus = float(total.get("GPU", 0))
        cpus = float(total.get("CPU", 1))
        n_nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")))
        names = [op.name for op in pipeline.stages]
        models = [op for op in pipeline.stages if getattr(op, "accelerator", False)]
        sim = any(getattr(getattr(op, "spec", None), "name", "").startswith("sim:") for op in models)
        num_gpus = self.num_gpus if self.num_gpus is not None else (1.0 if gpus >= 1 and not sim else 0.0)
        out: dict = {"cluster_cpus": cpus, "cluster_gpus": gpus, "stages": {}}
        used = READ_CPUS
        for op in models:
            if num_gpus > 0:
                share = num_gpus / len(models)
                n = self.embed_actors or max(1, int(gpus // num_gpus))
                spec = {"actors": n, "num_gpus": share, "num_cpus": MODEL_CPUS["gpu"] if op.name == "embed" else 0.5}
            else:
                # CPU-only: the model is the compute (tiny models in tests), or a simulated
                # accelerator that sleeps (sim:); one actor unless told otherwise.
                n = self.embed_actors or 1
                c = MODEL_CPUS["sim"] if sim and op.name == "embed" else (1.0 if op.name == "embed" else 0.5)
                spec = {"actors": n, "num_gpus": 0.0, "num_cpus": c}
            out["stages"][op.name] = spec
            used += spec["actors"] * spec["num_cpus"]
        accel = max(1, int(gpus)) if num_gpus > 0 else max(1, out["stages"].get("embed", {}).get("actors", 1))
        if "encode" in names:
            n = self.encode_actors or accel
            out["stages"]["encode"] = {"actors": n, "num_gpus": 0.0, "num_cpus": ENCODE_CPUS}
            used += n * ENCODE_CPUS
        if self.placement and self.placement["where"] != "driver":
            n = 1 if self.placement["where"] == "driver_node" else (self.write_actors or max(1, math.ceil(accel / 2)))
            out["stages"]["write"] = {"actors": n, "num_gpus": 0.0, "num_cpus": WRITE_CPUS}
            used += n * WRITE_CPUS
        left = cpus - used - HEADROOM_CPUS * n_nodes
        forced = self.embed_actors or self.encode_actors or self.write_actors or self.render_actors
        if num_gpus == 0 and left < MIN_RENDER_CPUS and not forced:
            # A small CPU-only machine (a laptop, a 2-core CI box) with several model stages: scale
            # the CPU requests down until render fits too. They are a scheduling budget; the
            # processes share the cores either way.
            room = cpus - READ_CPUS - HEADROOM_CPUS * n_nodes - MIN_RENDER_CPUS
            if room > 0:
                f = room / (used - READ_CPUS)
                for spec in out["stages"].values():
                    spec["num_cpus"] = round(spec["num_cpus"] * f, 3)
                used = READ_CPUS + sum(spec["actors"] * spec["num_cpus"] for spec in out["stages"].values())
                left = cpus - used - HEADROOM_CPUS * n_nodes
                out["cpu_requests_scaled_by"] = round(f, 3)
        n_render = self.render_actors or max(1, int(left))
        out["stages"]["render"] = {"actors": n_render, "num_gpus": 0.0,
                                   "num_cpus": round(max(0.05, min(1.0, left / n_render)), 3)}
        if cpus - used - n_render * out["stages"]["render"]["num_cpus"] < -1e-6:
            raise UsageError(f"the stages ask for {used + n_render * out['stages']['render']['num_cpus']:.2f} CPUs "
                             f"and the cluster has {cpus:g}: lower --embed-actors/--render-actors/--encode-actors/"
                             f"--write-actors")
        n_actors = sum(s["actors"] for s in out["stages"].values())
        # Enough for a few batches per actor in flight (full-budget pages are ~2 MB of pixels).
        out["object_store_budget_mb"] = float(max(256, 128 * n_actors))
        return out

    def _remote_args(self, stage: str, spec: dict) -> dict:
        args = {"num_cpus": spec["num_cpus"]}
        if spec["num_gpus"]:
            args["num_gpus"] = spec["num_gpus"]
        if stage == "write" and self.placement["where"] == "driver_node":
            args["label_selector"] = {"ray.io/node-id": self.placement["driver_node"]}
        elif stage == "write":
            # Writers round-robin over the nodes (soft: a full node passes its turn), so that every
            # node writes what it encoded; the other pools follow Ray Data's default (SPREAD).
            args["ray_remote_args_fn"] = _node_rotation()
        return args

    def run(self, units: Iterable[WorkUnit], pipeline: Pipeline, tracker: UnitTracker, plan=None) -> dict:
        if plan is None or not plan.keys:
            it = iter(units)
            if not list(islice(it, 1)):
                return {}  # nothing to do: do not start Ray at all
            raise ValueError("the Ray executor streams from a plan file (pipelines.ingest.planning.PlanFile)")
        if self.placement is None:
            self.start()
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # pagemill reports progress itself
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # pagemill prints its own progress line
        ctx.print_on_execution_start = False
        res = self.resources(pipeline)
        # Bound what streams between stages: rendered pages wait in the object store for the
        # embedding actors, and render is usually faster; without a budget they pile up.
        budget = self.object_store_mb or res["object_store_budget_mb"]
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            object_store_memory=budget * 2**20)
        read_args = {}
        if self.out_is_local and self.placement["where"] != "workers":
            read_args["label_selector"] = {"ray.io/node-id": self.placement["driver_node"]}  # the plan is on its disk
        # A block per unit (Ray Data splits each part's output to reach the number of blocks asked
        # for): units spread over the render actors instead of queueing behind one.
        ds = ray.data.read_datasource(PlanDatasource(plan.store, plan.keys), num_cpus=READ_CPUS,
                                      override_num_blocks=max(len(plan.keys), plan.units), **read_args)
        ops = list(pipeline.stages)
        if self.placement["where"] != "driver":
            ops.append(pipeline.writer)
        self._board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
        self._driver_ops = [] if self.placement["where"] != "driver" else [pipeline.writer]
        for op in ops:
            spec = res["stages"][op.name]
            ds = ds.map_batches(_StageActor, fn_constructor_kwargs={"op": op, "board": self._board},
                                batch_size=pipeline.batch_size(op),
                                batch_format="pyarrow", compute=ActorPoolStrategy(size=spec["actors"]),
                                **self._remote_args(op.name, spec))
            # Ray Data restarts a dead actor (OOM-killed, preempted, its node lost) and retries
            # its batch; a retried write rewrites the same keys.
        writer = None
        if self.placement["where"] == "driver":
            writer = pipeline.writer
            writer.setup()
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                tracker.add(writer(batch) if writer is not None else batch)
        except ray.exceptions.RayError as e:
            raise worker_error(e) from None
        finally:
            if writer is not None:
                writer.close()
        if tracker.pending:
            raise RuntimeError(f"{tracker.pending} units ended incomplete (pages lost between stages)")
        return {"resources": res, "write_placement": self.placement["where"], "write_placement_why": self.placement["why"]}

    def map_items(self, op, keys: list[str]):
        if not keys:
            return
        if self.placement is None:
            self.start()
        if self.placement["where"] == "driver":
            yield from Executor.map_items(self, op, keys)
            return
        total = ray.cluster_resources()
        accel = bool(getattr(op, "text_model", None) or getattr(op, "sv", None)) and total.get("GPU", 0) >= 1
        n = max(1, min(len(keys), int(total.get("CPU", 1) // 2) or 1))
        args = {"num_cpus": 0.5, **({"num_gpus": 1.0 / max(1, n)} if accel else {})}
        if self.placement["where"] == "driver_node":
            args["label_selector"] = {"ray.io/node-id": self.placement["driver_node"]}
        ds = ray.data.from_items([{"key": k} for k in keys], override_num_blocks=len(keys))
        ds = ds.map_batches(_StageActor, fn_constructor_kwargs={"op": op}, batch_size=1, batch_format="pyarrow",
                            compute=ActorPoolStrategy(size=n), **args)
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                yield from zip(batch["key"].to_pylist(), batch["new_key"].to_pylist(), batch["pages"].to_pylist(),
                              batch["result"].to_pylist())
        except ray.exceptions.RayError as e:
            raise worker_error(e) from None

    _board = None
    _driver_ops: list = []

    def live_counters(self) -> dict:
        out = dict(ray.get(self._board.totals.remote(), timeout=5)) if self._board is not None else {}
        for op in self._driver_ops:
            out[op.name] = op.stats.get("pages", 0)
        return out

    @property
    def tasks_in_driver(self) -> bool:
        return self.placement is None or self.placement["where"] == "driver"

    def run_task(self, fn, *args):
        if self.tasks_in_driver:
            return fn(*args)
        opts: dict = {"num_cpus": 0.1, "max_retries": 3}
        if self.placement["where"] == "driver_node":
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(self.placement["driver_node"], soft=False)
        return ray.get(ray.remote(fn).options(**opts).remote(*args))

    def close(self) -> None:
        if self._started_here and ray.is_initialized():
            ray.shutdown()
            self._started_here = False

    def holder_identity(self) -> dict:
        """This driver's Ray job on a cluster it joined (a private cluster is on this host, where
        the pid says enough), and its job submission."""
        found = submitted_job()
        if ray.is_initialized() and not self._started_here:
            ctx = ray.get_runtime_context()
            cluster = ray._private.worker.global_worker.gcs_client.cluster_id.hex()
            found.update(gcs=ctx.gcs_address, cluster=cluster, job=ctx.get_job_id())
        return found


# -- The run lock's view of Ray: the job that holds OUT, and whether it has finished ---------------

FINISHED_SUBMISSION = ("SUCCEEDED", "FAILED", "STOPPED")


def submitted_job() -> dict:
    """The Ray job submission this process is the entrypoint of (``ray job submit``, a KubeRay
    RayJob), from the environment its job supervisor sets; {} outside one."""
    sid = os.environ.get("RAY_JOB_SUBMISSION_ID")
    if not sid:  # Ray 2.x sets the submission id in the driver's job config
        try:
            sid = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")["metadata"]["job_submission_id"]
        except (ValueError, KeyError, TypeError):
            return {}
    address = os.environ.get("RAY_ADDRESS", "")
    return {"submission": sid, "gcs": address if ":" in address and "://" not in address else None}


def ray_job_verdict(recorded: dict):
    """Whether the Ray job a lock holder recorded has finished, asked of that cluster's GCS: a
    job by its id (on the cluster of the recorded id: another cluster at the same address answers
    WrongClusterID), a submission by its status. A cluster that does not answer proves nothing."""
    from ray._raylet import GcsClient

    from pipelines.out.lock import Verdict

    job, sub, gcs = recorded.get("job"), recorded.get("submission"), recorded.get("gcs")
    if not (job or sub):
        return None
    name = f"Ray job {job}" if job else f"Ray job submission {sub}"
    if not gcs:
        return Verdict(None, f"{name} not checked (no cluster address recorded)")
    try:
        check_address(gcs, timeout_s=2.0)
    except UsageError:
        return Verdict(None, f"{name} not checked: no Ray cluster answers at {gcs}")
    try:
        if job and recorded.get("cluster"):
            client = GcsClient(address=gcs, cluster_id=recorded["cluster"])
            found = client.get_all_job_info(job_or_submission_id=job, skip_submission_job_info_field=True,
                                            skip_is_running_tasks_field=True, timeout=5)
            entry = next((v for k, v in found.items() if k.hex() == job), None)
            if entry is None:
                return Verdict(None, f"{name} is unknown to the Ray cluster at {gcs}")
            if entry.is_dead:
                return Verdict(True, f"{name} has finished on the Ray cluster at {gcs}")
            return Verdict(False, f"{name} is running on the Ray cluster at {gcs}")
        if not sub:
            return Verdict(None, f"{name} not checked (no cluster id recorded)")
        client = GcsClient(address=gcs)
        raw = client.internal_kv_get(f"_ray_internal_job_info_{sub}".encode(), namespace=b"job", timeout=5)
        status = json.loads(raw).get("status") if raw else None
    except Exception as e:
        if "WrongClusterID" in str(e):
            return Verdict(None, f"{name} not checked: the Ray cluster at {gcs} is another one now")
        return Verdict(None, f"{name} not checked ({_first(e)})")
    if status is None:
        return Verdict(None, f"{name} is unknown to the Ray cluster at {gcs}")
    # A running submission proves no more than that: its driver may have died under a wrapper.
    return Verdict(True if status in FINISHED_SUBMISSION else None, f"{name} is {status} on the Ray cluster at {gcs}")
