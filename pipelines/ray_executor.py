"""Ray Data executor: the one module that imports Ray.

Streaming execution: a pool of render actors (CPU; each owns a MuPDF child process) feeds a pool
of embedding actors (one per GPU, ``num_gpus`` each, so Ray pins every actor to its own device;
``num_gpus=0`` on a CPU-only cluster). The driver consumes embedded batches as they come and
commits units as soon as they are complete, so rendering, embedding and committing overlap and
the driver holds only the units in flight.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from itertools import islice

from pipelines.executor import Executor, OnUnit, UnitCollector
from pipelines.plan import WorkUnit

try:
    import ray
    from ray.data import ActorPoolStrategy, DataContext
except ImportError as e:  # pragma: no cover - ray is a declared dependency
    raise ImportError("the Ray executor needs Ray Data: pip install 'ray[data]'") from e


class _RenderActor:
    def __init__(self, stage):
        self.stage = stage
        self.stage.setup()

    def __call__(self, batch):
        return self.stage(batch)


class _EmbedActor:
    def __init__(self, stage):
        self.stage = stage
        self.stage.setup()  # the model is loaded once per actor, not per batch
        self.gpu_ids = ray.get_gpu_ids()

    def __call__(self, batch):
        _maybe_die()
        return self.stage(batch)


def _maybe_die() -> None:
    """Crash test hook: ``PAGEMILL_EMBED_EXIT_ONCE=<file>`` makes the first embedding call in
    the cluster exit the actor's process abruptly (the file records that it happened)."""
    marker = os.environ.get("PAGEMILL_EMBED_EXIT_ONCE")
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, num_gpus: float | None = None, embed_actors: int | None = None,
                 render_actors: int | None = None, window_units: int = 512, object_store_mb: float | None = None):
        self.address = address
        self.num_gpus = num_gpus
        self.embed_actors = embed_actors
        self.render_actors = render_actors
        self.window_units = window_units
        self.object_store_mb = object_store_mb
        self._started_here = False

    def _init(self) -> None:
        if ray.is_initialized():
            return
        kwargs = dict(logging_level=logging.WARNING, log_to_driver=True, include_dashboard=False)
        if self.address:
            ray.init(address=self.address, **kwargs)
        else:
            # A private local cluster; the env var keeps it from joining one by accident.
            os.environ.pop("RAY_ADDRESS", None)
            ray.init(**kwargs)
            self._started_here = True

    def resources(self) -> dict:
        """The pool sizes and per-actor GPUs this run uses, derived from the cluster."""
        total = ray.cluster_resources()
        gpus = float(total.get("GPU", 0))
        cpus = float(total.get("CPU", 1))
        num_gpus = self.num_gpus if self.num_gpus is not None else (1.0 if gpus >= 1 else 0.0)
        if self.embed_actors:
            n_embed = self.embed_actors
        elif num_gpus > 0:
            n_embed = max(1, int(gpus // num_gpus))
        else:
            n_embed = 1
        embed_cpus = 1.0
        n_render = self.render_actors or max(1, int(cpus - n_embed * embed_cpus))
        # Enough for a few batches per actor in flight (full-budget pages are ~2 MB of pixels).
        object_store_mb = float(max(256, 128 * (n_embed + n_render)))
        return {"cluster_cpus": cpus, "cluster_gpus": gpus, "embed_actors": n_embed, "num_gpus_per_actor": num_gpus,
                "embed_cpus_per_actor": embed_cpus, "render_actors": n_render, "object_store_budget_mb": object_store_mb}

    def run(self, units: Iterable[WorkUnit], render, embed, on_unit: OnUnit) -> dict:
        it = iter(units)
        first = list(islice(it, 1))
        if not first:
            return {}  # nothing to do: do not start Ray at all
        self._init()
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # pagemill reports progress itself
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # pagemill prints its own progress line
        ctx.print_on_execution_start = False
        res = self.resources()
        # Bound what streams between stages: rendered pages wait in the object store for the
        # embedding actors, and render is usually faster; without a budget they pile up.
        budget = self.object_store_mb or res["object_store_budget_mb"]
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            object_store_memory=budget * 2**20)
        collector = UnitCollector(on_unit)
        while True:
            window = first + list(islice(it, self.window_units - len(first)))
            first = []
            if not window:
                break
            items = [{"unit_id": u.unit_id, "docs": json.dumps([[d.uri, d.version, d.size] for d in u.docs])}
                     for u in window]
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(
                _RenderActor, fn_constructor_kwargs={"stage": render}, batch_size=1, batch_format="pyarrow",
                compute=ActorPoolStrategy(size=min(res["render_actors"], len(items))), num_cpus=1,
            )
            ds = ds.map_batches(
                _EmbedActor, fn_constructor_kwargs={"stage": embed}, batch_size=embed.batch_size,
                batch_format="pyarrow", compute=ActorPoolStrategy(size=res["embed_actors"]),
                num_gpus=res["num_gpus_per_actor"], num_cpus=res["embed_cpus_per_actor"],
            )  # Ray Data restarts a dead actor (OOM-killed, preempted) and retries its batch
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                collector.add(batch)
        if collector.pending:
            raise RuntimeError(f"{collector.pending} units ended incomplete (pages lost between stages)")
        return {"resources": res}

    def close(self) -> None:
        if self._started_here and ray.is_initialized():
            ray.shutdown()
            self._started_here = False

