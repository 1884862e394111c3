"""Layouts, a text model or a single-vector model added to an existing index: the pages committed
before are given them from the archive (shards rewritten with the new columns, the new fields of
the vector store filled), exactly-once per shard like any commit."""

from __future__ import annotations

import json

from operators.augment import AugmentShards, augment_job_id
from operators.layouts.layout import parse_layout
from pipelines.ingest.run import ResolvedRun
from pipelines.ingest.stages import pages_schema, render_limits
from pipelines.out.keys import PAGES_PREFIX

MODELS = ("text", "sv-vlm")  # added models rather than layouts


def add_from_archive(run: ResolvedRun, added: list[str], out, source, ledger, executor, vectors, committer, say) -> int:
    """Give every committed shard what ``added`` names; returns the pages rewritten."""
    m = run.models
    keys = sorted(k for k in ledger.state.files if k.startswith(PAGES_PREFIX + "/"))
    sv = (m.sv, m.spec, source, m.budget, render_limits(run, extract_text=False)) if "sv-vlm" in added else None
    job = augment_job_id(added)
    op = AugmentShards(out, job, pages_schema(run), m.dim, [parse_layout(n) for n in added if n not in MODELS],
                       run.fde, text_model=m.text if "text" in added else None, sv=sv,
                       vectors=vectors.writer(layouts=list(added)), device=run.options.device)
    if keys:
        say(f"index: adding {', '.join(added)} to {len(keys)} shards from the archive")
    pages = 0
    for key, new_key, n, result in executor.map_items(op, keys):
        if new_key:
            committer.commit_rewrite(job, key, new_key, json.loads(result).get("store"))
            pages += n
    return pages
