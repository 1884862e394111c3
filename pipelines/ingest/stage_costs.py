"""What a page costs on the CPUs, stage by stage: the part of ``pagemill calibrate`` that plans cores
(an ingest's own stages, so it lives with them; the command hands it to calibrate).

The sample's documents go through the ingest's own stages, as a run on one machine runs them
(the local executor: one process, the stages in turn, so each stage's CPU clock is its own) into a
scratch output root and the store asked, with the layouts asked. The model stage is the calibrated
model's simulation (``sim:<preset>``: its exact vector shapes, at a rate no CPU waits for), so the
stages after it see the pages they will see; a checkpoint pagemill has no preset of runs itself
(on the CPU here, it is only the vectors the later stages need). The run's summary has each
stage's CPU seconds (``cpu_s``: its process and, for rendering, the renderer child), which this
turns into milliseconds per page:

- ``render``: MuPDF (and OCR, for the pages of the sample that need it), in the renderer child
  and the stage's process;
- ``encode``: by layout (``mv`` the full column, ``sv-mean`` the mean, each extra layout its own);
- ``embed_text``: the text model (``text:``), when the model asks for the text layer;
- ``write``: Parquet (``parquet``) and the store's client (``store``, with the store's own work
  where the store runs in the writer's process, as Milvus Lite and LanceDB do), and the wall
  time of the store's writes (rows per second, what sizing a store's ingest starts from). With
  ``--milvus-bulk-dir`` (a first load by bulk import) the writers' store part is staging the
  import files, and the rate is the server's import, timed from its first task to the rows
  counted (``store_write.path``: ``rows`` or ``bulk``).
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid

from operators.models.family import plan_name
from operators.models.presets import PRESETS
from operators.models.spec import split_model_specs

SIM_RATE = 100_000  # pages/s of the simulated model: its sleep is nothing beside the CPU stages


def stage_model(model: str) -> str:
    """The model string the stage pass runs: the simulation of a preset (its text: and sv: models
    kept), else the model itself."""
    visual, _ = split_model_specs(model)
    name = plan_name(visual)
    if name not in PRESETS:
        return model
    rest = [p.strip() for p in model.split(",") if p.strip() and p.strip() != visual]
    return ",".join([f"sim:{name}@{SIM_RATE}", *rest])


def stage_costs(src, refs, say=None, *, model: str, layouts: list[str] | None = None, vectors: str | None = None,
                store_options: dict | None = None, workdir: str | None = None) -> dict:
    """Milliseconds of CPU per page by stage, measured on ``refs`` of ``src``; see the module's
    docstring. ``vectors``: the store to write to (default: Milvus Lite in the scratch root)."""
    from operators.stores import open_vectors
    from pipelines.ingest.config import build_config
    from pipelines.ingest.job import run_ingest

    say = say or (lambda line: None)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        sample = os.path.join(tmp, "sample")
        os.makedirs(sample)
        for i, ref in enumerate(refs):
            name = os.path.basename(ref.uri.rstrip("/")) or "document.pdf"
            with open(os.path.join(sample, f"{i:04d}-{name}"), "wb") as f:
                f.write(src.read(ref))
        ran = stage_model(model)
        say(f"calibrate: the CPU stages on {len(refs)} documents ({ran}, layouts "
            f"{','.join(layouts or []) or 'the defaults'}, store {vectors or 'Milvus Lite'})")
        # a store given (a server, a LanceDB folder) gets an index of its own, removed after
        scratch = f"pagemill_calibrate_{uuid.uuid4().hex[:8]}" if vectors else None
        overrides = {"source": sample, "out": os.path.join(tmp, "out"), "model": ran, "executor": "local",
                     "layouts": list(layouts or []), "progress_interval_s": 3600.0,
                     **({"vectors": vectors, "collection": scratch} if vectors else {}), **(store_options or {})}
        cfg = build_config({}, overrides)
        try:
            summary = run_ingest(cfg, log=io.StringIO())
        finally:
            if scratch:
                gone = open_vectors(vectors, cfg.store, cfg.s3_options(), out=cfg.out).remove(scratch)
                say(f"calibrate: removed its scratch index from the store ({len(gone)} tables)")
    measured = costs_from_summary(summary, ran)
    if measured.get("store_write") and vectors and vectors.startswith(("http://", "https://", "tcp://")):
        measured["store_server"] = True  # a server's ingest: what plan sizes data nodes from
    return measured


def costs_from_summary(summary: dict, model: str) -> dict:
    """A run summary's stages as a calibration's ``cpu_ms_per_page`` (by stage, encode by layout,
    write split into Parquet and the store) and the store's measured write rate."""
    stages = summary.get("stages") or {}

    def ms(stage: str) -> float | None:
        return (stages.get(stage) or {}).get("cpu_ms_per_page")

    out: dict = {"render": ms("render")}
    encode = stages.get("encode") or {}
    out["encode"] = ms("encode")
    out["encode_by_layout"] = dict(encode.get("layout_cpu_ms_per_page") or {})
    if "embed_text" in stages:
        out["embed_text"] = ms("embed_text")
    write = stages.get("write") or {}
    pages = write.get("items") or 0
    store = next((k[:-len("_cpu_s")] for k in write if k.endswith("_cpu_s") and k != "parquet_cpu_s"), None)
    out["write"] = ms("write")
    if pages:
        out["write_parts"] = {"parquet": round(1000 * write.get("parquet_cpu_s", 0.0) / pages, 2),
                              "store": round(1000 * write.get(f"{store}_cpu_s", 0.0) / pages, 2)}
    out = {k: v for k, v in out.items() if v is not None}
    rows, store_s = write.get(f"{store}_rows") or 0, write.get(f"{store}_s") or 0.0
    measured = {"cpu_ms_per_page": out, "stage_pages": pages, "stage_model": model}
    imported = (summary.get(store) or {}).get("bulk_imported") if store else None
    if imported and pages:
        # a first load by bulk import: the writers only stage files (their CPU is write_parts'
        # store), and the server's import, timed to the rows counted, is the store's rate
        rows, import_s = sum(imported.values()), float(summary[store].get("bulk_import_s") or 0.0)
        measured["store_write"] = {"store": store, "path": "bulk", "rows": int(rows),
                                   "rows_per_page": round(rows / pages, 1), "import_s": round(import_s, 2),
                                   "staging_s": round(store_s, 3),
                                   **({"rows_per_s": round(rows / import_s, 1)} if import_s else {}),
                                   **({"pages_per_s": round(pages / store_s, 2)} if store_s else {})}
    elif rows and store_s:
        measured["store_write"] = {"store": store, "path": "rows", "rows": int(rows),
                                   "rows_per_page": round(rows / pages, 1), "rows_per_s": round(rows / store_s, 1),
                                   "pages_per_s": round(pages / store_s, 2)}
    return measured
