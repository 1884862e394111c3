"""Column names and Arrow schemas shared by every stage.

Stages pass ``pyarrow.Table`` batches; the names below are the contract between them and with
readers of ``OUT/pages`` and ``OUT/quarantine``. Keep them stable: scheduled jobs and later
tools depend on them.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

# Identity of a document and a page.
PAGE_ID = "page_id"
DOC_ID = "doc_id"
SOURCE_URI = "source_uri"
DOC_VERSION = "doc_version"
PAGE_NUMBER = "page_number"

# Rendered page.
WIDTH = "width"
HEIGHT = "height"
PIXELS = "pixels"  # raw RGB bytes, row-major, height * width * 3
TEXT = "text"  # the page's own text layer (PyMuPDF), or OCR's reading of it; null when not extracted
TEXT_SOURCE = "text_source"  # where ``text`` came from: native | ocr | none
PAGE_HASH = "page_hash"  # a 64-bit difference hash of the rendered page (near-duplicate pages)
PAGE_IMAGE = "page_image"  # the page as an image file's bytes (--page-images), between stages only
IMAGE_URI = "image_uri"  # where that image was written (OUT/images/...), null without --page-images

# Embedding outputs.
MODEL = "model"
N_VECTORS = "n_vectors"
PATCH_OFFSET = "patch_offset"  # index of the first image-patch vector in the multi-vector
N_PATCHES = "n_patches"  # number of image-patch vectors (after the model's spatial merge)
PATCH_GRID_H = "patch_grid_h"  # patch rows, so that patch i sits at (i // grid_w, i % grid_w)
PATCH_GRID_W = "patch_grid_w"
MV = "mv"  # full multi-vector: list<fixed_size_list<float16, D>>
SV_MEAN = "sv_mean"  # mean of the patch vectors, L2-normalised: fixed_size_list<float32, D>
SV_TEXT = "sv_text"  # the text layer's vector (text:<model>), null for pages without text
TEXT_CHUNKS = "text_chunks"  # the text layer's chunk vectors (operators/models/text_layer.py), null without text
SV_VLM = "sv_vlm"  # a single-vector VLM's page vector (sv:<model>): fixed_size_list<float32, D>
MV_RAW = "mv_raw"  # the model's float32 multi-vector, from the embed stage to the encode stage only

# Flow bookkeeping between stages (never written to OUT/pages).
UNIT_ID = "unit_id"
KIND = "kind"  # "page" for a page row, "unit" for the one marker row a unit sends downstream
UNIT_INFO = "unit_info"  # JSON on the marker row: documents, page counts, quarantine entries
STAGE_STATS = "stage_stats"  # JSON on the first row of each stage's output batch: {stage: counters}
KIND_PAGE = "page"
KIND_UNIT = "unit"
KIND_PAGE_FAILED = "page_failed"  # a page the embed stage could not embed; UNIT_INFO holds the reason

# Quarantine.
STAGE = "stage"
REASON = "reason"
DETAIL = "detail"
RUN_ID = "run_id"


def doc_id_for(source_uri: str) -> str:
    """Stable document id: a short hash of the source URI (independent of the version)."""
    return hashlib.blake2b(source_uri.encode("utf-8"), digest_size=8).hexdigest()


def page_id_for(source_uri: str, page_number: int) -> str:
    """Stable page primary key, derived from the source URI and the 0-based page number.

    >>> page_id_for("file:///a.pdf", 3)
    '8138cc3c10cf1e8a-p000003'
    """
    return f"{doc_id_for(source_uri)}-p{page_number:06d}"


RENDERED_SCHEMA = pa.schema(
    [
        pa.field(UNIT_ID, pa.string()),
        pa.field(KIND, pa.string()),
        pa.field(PAGE_ID, pa.string()),
        pa.field(DOC_ID, pa.string()),
        pa.field(SOURCE_URI, pa.string()),
        pa.field(DOC_VERSION, pa.string()),
        pa.field(PAGE_NUMBER, pa.int32()),
        pa.field(WIDTH, pa.int32()),
        pa.field(HEIGHT, pa.int32()),
        pa.field(PIXELS, pa.large_binary()),
        pa.field(TEXT, pa.large_string()),
        pa.field(UNIT_INFO, pa.string()),
        pa.field(TEXT_SOURCE, pa.string()),
        pa.field(PAGE_HASH, pa.int64()),
        pa.field(PAGE_IMAGE, pa.large_binary()),
    ]
)


def pages_schema(dim: int, extra: list[pa.Field] | tuple = ()) -> pa.Schema:
    """Schema of the rows in ``OUT/pages`` for a multi-vector model of output dimension ``dim``;
    ``extra``: the fields of the run's additional layouts."""
    return pa.schema(
        [
            pa.field(PAGE_ID, pa.string(), nullable=False),
            pa.field(DOC_ID, pa.string(), nullable=False),
            pa.field(SOURCE_URI, pa.string(), nullable=False),
            pa.field(DOC_VERSION, pa.string(), nullable=False),
            pa.field(PAGE_NUMBER, pa.int32(), nullable=False),
            pa.field(WIDTH, pa.int32()),
            pa.field(HEIGHT, pa.int32()),
            pa.field(MODEL, pa.string()),
            pa.field(N_VECTORS, pa.int32()),
            pa.field(PATCH_OFFSET, pa.int32()),
            pa.field(N_PATCHES, pa.int32()),
            pa.field(PATCH_GRID_H, pa.int32()),
            pa.field(PATCH_GRID_W, pa.int32()),
            pa.field(TEXT, pa.large_string()),
            pa.field(TEXT_SOURCE, pa.string()),
            pa.field(PAGE_HASH, pa.int64()),
            pa.field(IMAGE_URI, pa.string()),
            pa.field(MV, pa.list_(pa.list_(pa.float16(), dim))),
            pa.field(SV_MEAN, pa.list_(pa.float32(), dim)),
            *extra,
        ]
    )


QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field(SOURCE_URI, pa.string(), nullable=False),
        pa.field(DOC_ID, pa.string()),
        pa.field(DOC_VERSION, pa.string()),
        pa.field(PAGE_NUMBER, pa.int32()),  # null for a whole-document entry
        pa.field(STAGE, pa.string(), nullable=False),
        pa.field(REASON, pa.string(), nullable=False),
        pa.field(DETAIL, pa.string()),
        pa.field(UNIT_ID, pa.string()),
        pa.field(RUN_ID, pa.string()),
    ]
)


def stamp(batch: pa.Table, stage: str, stats: dict, settings: dict | None = None) -> pa.Table:
    """Put a stage worker's cumulative counters on the first row of its output batch
    (``stage_stats``: every worker that handled a batch reports, whichever rows it saw) and its
    effective settings on the unit marker rows. These are the channels from a streaming worker
    back to the driver that need no service: the writers hand them on in their results."""
    import json

    if batch.num_rows == 0:
        return batch
    if STAGE_STATS in batch.column_names:
        col = batch[STAGE_STATS].to_pylist()
        first = json.loads(col[0]) if col[0] else {}
        first[stage] = stats
        col[0] = json.dumps(first)
        batch = batch.set_column(batch.column_names.index(STAGE_STATS), STAGE_STATS, pa.array(col, pa.string()))
    else:
        batch = batch.append_column(STAGE_STATS, pa.array([json.dumps({stage: stats})] + [None] * (batch.num_rows - 1),
                                                            pa.string()))
    if not settings or UNIT_INFO not in batch.column_names:
        return batch
    kinds = batch[KIND].to_pylist()
    if KIND_UNIT not in kinds:
        return batch
    infos = batch[UNIT_INFO].to_pylist()
    for i, (kind, info) in enumerate(zip(kinds, infos)):
        if kind == KIND_UNIT and info:
            d = json.loads(info)
            d.setdefault("settings", {})[stage] = settings
            infos[i] = json.dumps(d)
    return batch.set_column(batch.column_names.index(UNIT_INFO), UNIT_INFO, pa.array(infos, pa.string()))


class MissingColumnsError(ValueError):
    """A stage got a batch without the columns it needs."""


def require_columns(stage: str, table: pa.Table, columns: list[str]) -> None:
    """Fail with the stage name and the missing columns, instead of a KeyError deep inside."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise MissingColumnsError(f"{stage}: batch lacks columns {missing} (has {table.column_names})")
