"""Is the accelerator fed? The model alone against the pipeline's steady state, in one run.

    python -m benchmarks.gpu [--model colqwen2] [--docs 200] [--batch-size 16] [--dtype auto]

Meant for a GPU node (the procedure and the figures to expect are in README.md, "On a GPU"); it
also runs on a CPU, with the tiny model, which is how the test suite keeps it working.

1. ``pagemill calibrate`` on pages of the sample, in a process of its own: the model alone, at the
   pages/s this device gives it with nothing else to do (random weights: speed does not depend on
   their values).
2. ``pagemill ingest`` of the sample on the Ray executor with the same model, batch size and dtype
   (one embedding actor per GPU, render actors on the other cores): its steady-state pages/s (after
   the first commit) and the embedding actors' accelerator-busy fraction (forward-pass time over
   the actor's wall time, start-up wait included).

Targets (issue 10): accelerator busy >= 0.85 in steady state with >= 8 CPU cores per GPU; the
steady state then runs at (nearly) the model-alone rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.pipeline import DEFAULT_CORPUS, sample


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("PAGEMILL_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--category", default="tables")
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--model", default="colqwen2")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--calibration-pages", type=int, default=64)
    ap.add_argument("--ray-address", default=None, help="a running cluster (default: a private local one)")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = sample(args.corpus, args.category, args.docs, tmp)
        calib_src = tmp / "calibration"
        calib_src.mkdir()
        for p in sorted(src.glob("*.pdf"))[: max(1, args.calibration_pages // 2)]:
            (calib_src / p.name).write_bytes(p.read_bytes())
        calib_file = tmp / "calib.json"
        subprocess.run([sys.executable, "-m", "pipelines.cli", "calibrate", "--model", args.model, "--weights", "random",
                        "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--pages",
                        str(args.calibration_pages), str(calib_src), "--out", str(calib_file)],
                       check=True, stdout=subprocess.DEVNULL)
        calib = json.loads(calib_file.read_text())

        from pipelines.ingest.config import IngestConfig
        from pipelines.ingest.job import run_ingest

        cfg = IngestConfig(source=str(src), out=str(tmp / "out"), executor="ray", ray_address=args.ray_address,
                           model=args.model, weights="random", dtype=args.dtype, batch_size=args.batch_size,
                           unit_max_docs=max(1, args.docs // 8),  # several units: a steady state to measure
                           progress_interval_s=3600).validate()
        summary = run_ingest(cfg, log=open(os.devnull, "w"))
    stages = summary["stages"]
    res = summary["executor_stats"]["resources"]
    alone = calib["pages_per_s"]
    steady = stages.get("steady_pages_per_s") or summary["pages_per_s"]
    busy = stages["embed"].get("forward_share")
    gpus = res.get("cluster_gpus") or 0
    per_gpu = f"{res['cluster_cpus'] / gpus:.0f}" if gpus else "no GPU"
    device = " ".join(x for x in (str(calib.get("device")), calib["host"].get("gpu")) if x)
    lines = [f"Accelerator: {args.model} (random weights), {device}, {calib.get('dtype')}, batch {args.batch_size}; "
             f"{summary['pages']['indexed']} pages of {args.category}; CPU cores per GPU: {per_gpu}", "",
             "| measure | value |", "|---|---:|",
             f"| model alone (calibrate), pages/s | {alone:.1f} |",
             f"| pipeline steady state (after the first commit), pages/s | {steady:.1f} |",
             f"| pipeline ÷ model alone | {steady / alone:.2f} |",
             f"| accelerator busy (embedding actors, forward pass ÷ wall) | {busy:.2f} |",
             f"| mean pages per forward pass | {stages['embed'].get('mean_batch_pages')} |",
             f"| start-up until the first commit, s | {stages.get('first_commit_s')} |",
             "", "target: accelerator busy ≥ 0.85 in steady state with ≥ 8 CPU cores per GPU",
             f"run's own diagnosis: {summary.get('bottleneck')}"]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
