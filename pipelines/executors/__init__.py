"""Where the stages run: in this process, or on Ray."""

from __future__ import annotations


def executor_for(options, out_is_local: bool, single_process_store: str | None = None, log=None):
    """The executor a run's options ask for (``options``: an IngestConfig): the local loop, or
    Ray Data (imported only then)."""
    if options.executor == "local":
        from pipelines.executors.local import LocalExecutor

        return LocalExecutor()
    from pipelines.executors.ray_executor import RayExecutor

    o = options
    return RayExecutor(address=o.ray_address, num_gpus=o.num_gpus, embed_actors=o.embed_actors,
                       render_actors=o.render_actors, object_store_mb=o.object_store_mb, encode_actors=o.encode_actors,
                       write_actors=o.write_actors, write_placement=o.write_placement, out_is_local=out_is_local,
                       single_process_store=single_process_store, log=log)


def holder_checks() -> tuple:
    """What proves the holder of a run lock gone, beyond its pid on this host: its Ray job has
    finished (Ray is imported only for a holder that names one)."""
    def ray_job(holder: dict):
        if not holder.get("ray"):
            return None
        from pipelines.executors.ray_executor import ray_job_verdict

        return ray_job_verdict(holder["ray"])

    return (ray_job,)
