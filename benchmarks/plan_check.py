"""Does a plan predict a run? A plan for this machine against a real run on it, in one go.

    python -m benchmarks.plan_check [--corpus DIR] [--pages 160] [--rates 4,1000]

For each simulated accelerator rate (``sim:colqwen2@RATE``: the preset's exact shapes, a GPU of
RATE pages/s), the CPU stages are calibrated on the sample (pipelines/ingest/stage_costs.py,
what ``pagemill calibrate`` runs), ``plan`` sizes this machine (its cores, one such GPU, each stage's actors as the Ray executor
starts them there) with layouts mv + mv-pool3 + sv-mean and predicts its pages/s, the resource
that binds and the bottleneck stage; then the same documents are ingested on a local Ray cluster (the fleet's
executor, writes on the workers, Milvus Lite) and its steady pages/s and busiest stage are read
from the run's summary. A slow rate binds on the GPU, a fast one on the CPUs. The goal: the
prediction within 25% of the run, and the same bottleneck.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

from benchmarks.fleet import DEFAULT_CORPUS, sample_pages

LAYOUTS = ["mv-pool3"]


def predicted(src: Path, rate: float, workdir: Path, vectors: str | None) -> dict:
    from operators.io.sources import LocalSource
    from pipelines.analysis.capacity import plan
    from pipelines.ingest.stage_costs import stage_costs

    source = LocalSource(str(src))
    cal = stage_costs(source, list(source.list_documents()), model="colqwen2", layouts=LAYOUTS,
                      vectors=vectors, workdir=str(workdir))
    cal.update(model=f"sim:colqwen2@{rate:g}", pages_per_s=rate)
    store = "lancedb" if (vectors or "").startswith("lancedb:") else "milvus"
    return plan(preset="colqwen2", layouts=LAYOUTS, calibration=cal, store=store,
                index="NONE" if store == "lancedb" else "AUTOINDEX",
                fleet={"gpus": 1, "cpus": float(os.cpu_count() or 1)})["fleet"]


def measured(src: Path, rate: float, out: Path, vectors: str | None) -> dict:
    from pipelines.ingest.config import build_config
    from pipelines.ingest.job import run_ingest

    cfg = build_config({}, {"source": str(src), "out": str(out), "model": f"sim:colqwen2@{rate}", "executor": "ray",
                            "layouts": LAYOUTS, "unit_max_docs": 4, "write_batch_pages": 8,
                            "progress_interval_s": 3600.0, **({"vectors": vectors} if vectors else {})})
    stages = run_ingest(cfg, log=io.StringIO())["stages"]
    busy = {s: v["utilisation"] for s, v in stages.items() if isinstance(v, dict) and v.get("utilisation") is not None}
    # the run's rate from its first batch to its last commit (start-up and the end's flush are no
    # page's cost); small writer batches, so that commits do not come in bursts
    return {"pages_per_s": stages.get("flowing_pages_per_s"), "busiest": max(busy, key=busy.get), "utilisation": busy}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--pages", type=int, default=160)
    ap.add_argument("--rates", default="4,1000")
    ap.add_argument("--vectors", help="the store (default Milvus Lite; lancedb: for LanceDB in OUT)")
    args = ap.parse_args(argv)
    lines = [f"this machine: {os.cpu_count()} cores, one simulated GPU, layouts mv + mv-pool3 + sv-mean, "
             f"{'LanceDB' if (args.vectors or '').startswith('lancedb:') else 'Milvus Lite'}", "",
             "| GPU rate | plan: binds | plan: pages/s | plan: bottleneck | run: pages/s | run: busiest stage | "
             "run / plan |", "|---:|---|---:|---|---:|---|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, _ = sample_pages(args.corpus, args.pages, tmp)
        for rate in (float(r) for r in args.rates.split(",")):
            f = predicted(src, rate, tmp, args.vectors)
            run = measured(src, rate, tmp / f"out-{rate:g}", args.vectors)
            ratio = run["pages_per_s"] / f["pages_per_s"] if run["pages_per_s"] else float("nan")
            lines.append(f"| {rate:g} | {f['binding']} | {f['pages_per_s']:.1f} | {f.get('bottleneck_stage', '-')} | "
                         f"{run['pages_per_s'] or float('nan'):.1f} | {run['busiest']} | {ratio:.2f} |")
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
