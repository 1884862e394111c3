"""The stages of a run, from its resolved facts: render at the decided budget, the model stages,
encode every layout, and the writer (Parquet and the vector store)."""

from __future__ import annotations

import pyarrow as pa

from operators import schema as S
from operators.embed import EmbedPages, EmbedSinglePages, EmbedText
from operators.encode import EncodePages
from operators.render import RenderLimits, RenderPages, load_password_map, parse_page_images
from operators.writer import PagesWriter
from pipelines.executors.base import Pipeline
from pipelines.ingest.run import ResolvedRun


def render_limits(run: ResolvedRun, extract_text: bool | None = None) -> RenderLimits:
    cfg, ocr = run.options, run.ocr
    return RenderLimits(page_timeout_s=cfg.page_timeout_s, max_pages=cfg.max_pages, max_bytes=cfg.max_doc_bytes,
                        extract_text=cfg.extract_text if extract_text is None else extract_text,
                        password_map=load_password_map(cfg.passwords) if cfg.passwords else (),
                        ocr=ocr.mode if ocr.on else "never", ocr_languages=ocr.languages, ocr_dpi=cfg.ocr_dpi,
                        tessdata=ocr.tessdata, office_timeout_s=cfg.office_timeout_s,
                        page_images=parse_page_images(cfg.page_images))


def pages_schema(run: ResolvedRun) -> pa.Schema:
    """The ``OUT/pages`` schema of the run's shards."""
    return S.pages_schema(run.models.dim, encoder(run).extra_fields())


def encoder(run: ResolvedRun) -> EncodePages:
    m = run.models
    return EncodePages(m.dim, list(run.layouts), run.fde, text_dim=m.text_dim, sv_dim=m.sv_dim)


def build_pipeline(run: ResolvedRun, source, out, vectors=None, vectors_name: str = "vectors",
                   known_hashes=None) -> Pipeline:
    """``vectors``: the vector store's writer (``VectorStore.writer``), named ``vectors_name``;
    ``known_hashes``: the indexed documents' content keys (``LedgerState.content_keys``)."""
    cfg, m = run.options, run.models
    stages = [RenderPages(source, m.budget, render_limits(run), known_hashes=known_hashes),
              EmbedPages(m.spec, batch_size=cfg.batch_size, max_batch_tokens=cfg.max_batch_tokens,
                         keep_pixels=bool(m.sv), dedup_pages=cfg.dedup == "pages")]
    if m.sv:
        stages.append(EmbedSinglePages(m.sv, m.spec, batch_size=cfg.batch_size))
    if m.text:
        stages.append(EmbedText(m.text, device=cfg.device))
    stages.append(encoder(run))
    writer = PagesWriter(out, pages_schema(run), run.shard_metadata(), run.run_id, vectors, vectors_name)
    return Pipeline(stages, writer, batch_sizes={
        "render": 1, "embed": cfg.batch_size, "embed_sv": cfg.batch_size, "embed_text": 64, "encode": None,
        "write": cfg.write_batch_pages})
