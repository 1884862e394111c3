"""The storage cost model: bytes per page of each layout in Parquet and in Milvus, projected.

Everything here is arithmetic on parameters (vectors per page, dim, encoding, key lengths), so
`pagemill plan` needs no run; `pagemill report` feeds it measured parameters and checks the
prediction against measured bytes.

Figures the model reproduces (tests/pipelines/test_costs.py):
- ColPali, 1030 x 128 bf16: 263,680 bytes per page, ~264 GB per million pages.
- 3072-dim tokens, ~1,750 per page, bf16: ~10.75 TB per million pages (NemoRetriever 3B: 10.3 TB).
- single 2048-d bf16 vector: 4,096 bytes per page; binary 1030 x 128: 16,480 bytes per page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from operators.errors import UsageError
from operators.humanize import human_bytes, short_count  # noqa: F401  (the report's and plan's)
from operators.layouts.encodings import PARQUET_LEVEL_BYTES, PARQUET_PAGE_BYTES
from operators.layouts.fde import FdeParams
from operators.layouts.layout import Layout, parse_layout
from operators.stores.milvus.lite import lite_memory_bytes, lite_memory_warning  # noqa: F401  (plan's Milvus Lite rows)

# Bytes per vector in Parquet and in Milvus are each encoding's own (operators/layouts/encodings.py,
# with the Parquet level overheads measured on the dev corpus); vectors per page each pooling's.
VARCHAR_OVERHEAD = 4  # length prefix per VARCHAR value
PAGE_ID_LEN = 24  # "<16 hex>-p<6 digits>"
DOC_ID_LEN = 16

# Index overhead per vector, in memory and on disk, beyond the raw vector (bytes); D = dim.
INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "DISKANN", "BIN_FLAT", "BIN_IVF_FLAT", "AUTOINDEX")


@dataclass(frozen=True)
class Prices:
    """Monthly prices in USD (defaults: list prices of the big clouds, rounded; override with --prices)."""

    object_storage_gb_month: float = 0.023  # S3 Standard
    ram_gb_month: float = 2.00  # memory-optimised instances, per GB of RAM
    disk_gb_month: float = 0.08  # gp3 SSD
    gpu_hour: float = 2.50  # one data-centre GPU, on demand


DEFAULT_PRICES = Prices()


def index_overhead(index: str, dim: int, vector_bytes: float, hnsw_m: int = 16, pq_m: int | None = None,
                   diskann_r: int = 64) -> tuple[float, float]:
    """(memory, disk) bytes per vector for the index, *including* the vectors it holds in memory.

    HNSW keeps the vectors plus 2M neighbour ids (4 bytes) on layer 0 and ~1/M more above;
    IVF_FLAT keeps vectors plus an 8-byte id; IVF_SQ8 one byte per dim; IVF_PQ ``pq_m`` bytes
    (default D/4); DISKANN keeps PQ codes in memory and vectors plus an R-degree graph on disk.
    """
    index = index.upper()
    if index in ("HNSW", "AUTOINDEX"):
        links = 2 * hnsw_m * 4 * (1 + 1 / hnsw_m)
        return vector_bytes + links, vector_bytes + links
    if index in ("FLAT", "BIN_FLAT"):
        return vector_bytes, 0.0
    if index in ("IVF_FLAT", "BIN_IVF_FLAT"):
        return vector_bytes + 8, vector_bytes + 8
    if index == "IVF_SQ8":
        return dim + 8, dim + 8
    if index == "IVF_PQ":
        m = pq_m or max(1, dim // 4)
        return m + 8, m + 8
    if index == "DISKANN":
        codes = max(1, dim // 4)
        return codes + 8, vector_bytes + diskann_r * 4 + codes
    raise ValueError(f"unknown index type {index!r} (one of {', '.join(INDEX_TYPES)})")


@dataclass
class LayoutCost:
    """Bytes per page of one layout, from parameters."""

    layout: str
    vectors_per_page: float
    dim: int
    bytes_per_vector: float
    raw_bytes_per_page: float
    parquet_bytes_per_page: float
    milvus_rows_per_page: float
    milvus_raw_bytes_per_page: float
    milvus_memory_bytes_per_page: float
    milvus_disk_bytes_per_page: float
    index: str

    def projected(self, pages: int, replicas: int = 1) -> dict:
        return {
            "pages": pages,
            "object_storage_bytes": self.parquet_bytes_per_page * pages,
            "milvus_memory_bytes": self.milvus_memory_bytes_per_page * pages * replicas,
            "milvus_disk_bytes": self.milvus_disk_bytes_per_page * pages,
        }

    def monthly_cost(self, pages: int, prices: Prices, replicas: int = 1, in_milvus: bool = True) -> float:
        p = self.projected(pages, replicas)
        gb = 1e9
        cost = p["object_storage_bytes"] / gb * prices.object_storage_gb_month
        if in_milvus:
            cost += p["milvus_memory_bytes"] / gb * prices.ram_gb_month + p["milvus_disk_bytes"] / gb * prices.disk_gb_month
        return cost


def stored_bytes_per_vector(layout: Layout, dim: int, fde: FdeParams | None = None) -> float:
    return layout.bytes_per_vector(dim, (fde or FdeParams()).dim)


def parquet_bytes_per_page(layout: Layout, vectors_per_page: float, dim: int, fde: FdeParams | None = None) -> float:
    return layout.parquet_bytes_per_page(vectors_per_page, dim, (fde or FdeParams()).dim)


def milvus_vector_bytes(layout: Layout, dim: int, lite: bool, fde: FdeParams | None = None) -> float:
    """Bytes of one vector in a Milvus field of its encoding's type (Milvus Lite: float vectors only;
    a single vector is a float32 field whatever its encoding in Parquet)."""
    d = layout.dim(dim, (fde or FdeParams()).dim)
    return d * 4.0 if lite or not layout.is_multi_vector else d * layout.codec.bytes_per_dim


def milvus_index(layout: Layout, index: str) -> str:
    """The index type a Milvus field of the layout's encoding gets for ``index``: binary fields
    take the binary index types (HNSW and FLAT have BIN_ forms)."""
    upper = index.upper()
    if layout.encoding == "bin" and layout.is_multi_vector and upper in ("HNSW", "AUTOINDEX", "FLAT"):
        return "BIN_FLAT" if upper == "FLAT" else "BIN_IVF_FLAT"
    return index


def patch_row_scalar_bytes(doc_version_len: float, vectors_per_page: float) -> float:
    """Keys and scalars repeated on every row of a row-per-vector collection: ``patch_id``
    (``<page_id>:<index>``), ``page_id`` and ``doc_version``."""
    index_digits = max(1.0, math.log10(max(vectors_per_page, 1)) + 0.5)
    patch_id = PAGE_ID_LEN + 1 + index_digits
    varchars = patch_id + PAGE_ID_LEN + doc_version_len
    return varchars + 3 * VARCHAR_OVERHEAD


def page_row_scalar_bytes(doc_version_len: float, source_uri_len: float) -> float:
    varchars = PAGE_ID_LEN + DOC_ID_LEN + doc_version_len + source_uri_len
    return varchars + 4 * VARCHAR_OVERHEAD + 4  # + page_number INT32


def layout_cost(layout: Layout | str, vectors_per_page: float, dim: int, *, index: str = "HNSW", lite: bool = False,
                doc_version_len: float = 26.0, source_uri_len: float = 80.0, fde: FdeParams | None = None) -> LayoutCost:
    """The cost of one layout per page. Multi-vector layouts are one Milvus row per vector
    (keys repeated per row); single-vector layouts are one field of the page-level row."""
    layout = parse_layout(layout) if isinstance(layout, str) else layout
    bpv = stored_bytes_per_vector(layout, dim, fde)
    vec = milvus_vector_bytes(layout, dim, lite, fde)
    d = layout.dim(dim, (fde or FdeParams()).dim)
    index = milvus_index(layout, index)
    mem_idx, disk_idx = index_overhead(index, d, vec)
    if layout.is_multi_vector:
        rows = vectors_per_page
        scalars = patch_row_scalar_bytes(doc_version_len, vectors_per_page)
    else:
        rows = 1.0
        scalars = page_row_scalar_bytes(doc_version_len, source_uri_len)
    raw = rows * (vec + scalars)
    return LayoutCost(
        layout=layout.name,
        vectors_per_page=vectors_per_page,
        dim=d,
        bytes_per_vector=bpv,
        raw_bytes_per_page=vectors_per_page * bpv,
        parquet_bytes_per_page=parquet_bytes_per_page(layout, vectors_per_page, dim, fde),
        milvus_rows_per_page=rows,
        milvus_raw_bytes_per_page=raw,
        milvus_memory_bytes_per_page=rows * (mem_idx + scalars),
        milvus_disk_bytes_per_page=raw + rows * disk_idx,
        index=index.upper(),
    )


# The text layer (``text:<model>``, operators/models/text_layer.py): one Milvus row per chunk of a page's
# text. Defaults measured on the dev corpus' text-heavy documents (benchmarks/text.py: 4.4 chunks
# a page of prose; about 3 over a mixed corpus, whose scans and slides have few or none).
TEXT_DIM = 384  # all-MiniLM-L6-v2
TEXT_CHUNKS_PER_PAGE = 3.0
TEXT_CHUNK_BYTES = 900.0  # the BM25 text of a chunk (UTF-8, as stored: unspaced scripts as bigrams)
BM25_TERMS_PER_CHUNK = 90.0  # distinct terms of a 150-word chunk: its sparse vector's entries
SPARSE_ENTRY_BYTES = 8.0  # a term id (4) and its weight (4), in the sparse vector and its inverted index


def text_layer_cost(chunks_per_page: float = TEXT_CHUNKS_PER_PAGE, dim: int = TEXT_DIM, *, bm25: bool = True,
                    index: str = "HNSW", doc_version_len: float = 26.0, chunk_bytes: float = TEXT_CHUNK_BYTES,
                    terms_per_chunk: float = BM25_TERMS_PER_CHUNK) -> LayoutCost:
    """The text layer per page: in Parquet the page vector (``sv_text``) and the chunks' vectors
    (``text_chunks``; the text itself is archived with or without a text model); in Milvus one
    row per chunk (keys, the dense vector with its index and, where the server has BM25, the
    chunk's text with Milvus' sparse vector and inverted index)."""
    vec = dim * 4.0
    mem_idx, disk_idx = index_overhead(index, dim, vec)
    scalars = patch_row_scalar_bytes(doc_version_len, chunks_per_page)
    text = (chunk_bytes + VARCHAR_OVERHEAD) if bm25 else 0.0
    sparse = terms_per_chunk * SPARSE_ENTRY_BYTES if bm25 else 0.0
    rows = chunks_per_page
    parquet = (vec + PARQUET_PAGE_BYTES) + rows * (vec + PARQUET_LEVEL_BYTES["list"]) + PARQUET_PAGE_BYTES
    raw = rows * (vec + scalars + text)
    return LayoutCost(
        layout="text" + ("+bm25" if bm25 else ""),
        vectors_per_page=rows,
        dim=dim,
        bytes_per_vector=vec,
        raw_bytes_per_page=(rows + 1) * vec,
        parquet_bytes_per_page=parquet,
        milvus_rows_per_page=rows,
        milvus_raw_bytes_per_page=raw,
        # the sparse vectors and their inverted index (2 x the entries) are in memory and on disk
        milvus_memory_bytes_per_page=rows * (mem_idx + scalars + text + 2 * sparse),
        milvus_disk_bytes_per_page=raw + rows * (disk_idx + 2 * sparse),
        index=index.upper(),
    )


# LanceDB (operators/stores/lancedb/): one row per page, each layout a column of it (a
# multi-vector as a list of vectors: no keys repeated per vector); its indexes are files beside
# the data, read into the index cache when searched, so its memory is its indexes. Bytes per
# indexed vector, measured on 50,000 128-d vectors (fp16) with lancedb 0.40 (per-index fixed
# costs, a PQ codebook of 256 x D values, are left out): IVF_PQ its sub-vector codes and ~2
# bytes of row address; IVF_FLAT the vector as stored and ~1; the HNSW variants their codes (SQ:
# a byte a dimension) and a graph of 2M neighbours (4 bytes each, M=20) and ~40 bytes.
LANCE_INDEX_TYPES = ("NONE", "IVF_FLAT", "IVF_PQ", "IVF_HNSW_SQ", "IVF_HNSW_PQ")
LANCE_HNSW_M = 20


def lance_index_bytes(index: str, dim: int, vector_bytes: float, num_sub_vectors: int | None = None,
                      m: int = LANCE_HNSW_M) -> float:
    """Bytes per vector of a LanceDB vector index (``num_sub_vectors``: PQ's, default D/16)."""
    index = index.upper()
    codes = num_sub_vectors or max(1, dim // 16)
    graph = 2 * m * 4 + 40
    per = {"NONE": 0.0, "IVF_FLAT": vector_bytes + 1, "IVF_PQ": codes + 2.0, "IVF_HNSW_SQ": dim + graph,
           "IVF_HNSW_PQ": codes + graph}
    if index not in per:
        raise UsageError(f"--index {index}: LanceDB's are {', '.join(LANCE_INDEX_TYPES)}")
    return per[index]


@dataclass
class LanceCost:
    layout: str
    held: bool  # LanceDB holds float16/32 multi-vectors and float32 vectors only
    data_bytes_per_page: float
    index_bytes_per_page: float

    @property
    def memory_bytes_per_page(self) -> float:
        return self.index_bytes_per_page

    @property
    def disk_bytes_per_page(self) -> float:
        return self.data_bytes_per_page + self.index_bytes_per_page


def lance_layout_cost(layout: Layout | str, vectors_per_page: float, dim: int, index: str = "NONE",
                      fde: FdeParams | None = None) -> LanceCost:
    """A layout's column and index in LanceDB, per page."""
    layout = parse_layout(layout) if isinstance(layout, str) else layout
    d = layout.dim(dim, (fde or FdeParams()).dim)
    if layout.is_multi_vector and layout.encoding not in ("fp16", "fp32"):
        return LanceCost(layout.name, False, 0.0, 0.0)
    per_dim = layout.codec.bytes_per_dim if layout.is_multi_vector else 4.0
    n = vectors_per_page if layout.is_multi_vector else 1.0
    return LanceCost(layout.name, True, n * d * per_dim, n * lance_index_bytes(index, d, d * per_dim))


def lance_text_cost(chunks_per_page: float = TEXT_CHUNKS_PER_PAGE, dim: int = TEXT_DIM, index: str = "NONE",
                    chunk_bytes: float = TEXT_CHUNK_BYTES, terms_per_chunk: float = BM25_TERMS_PER_CHUNK) -> LanceCost:
    """The text layer in LanceDB: a row per chunk (its vector, its text, its keys) and the
    full-text index (an entry a distinct term of a chunk)."""
    keys = 2 * PAGE_ID_LEN + DOC_ID_LEN + 26.0
    data = chunks_per_page * (dim * 4.0 + chunk_bytes + keys)
    idx = chunks_per_page * (lance_index_bytes(index, dim, dim * 4.0) + terms_per_chunk * SPARSE_ENTRY_BYTES)
    return LanceCost("text", True, data, idx)


def pooled_vectors(vectors_per_page: float, layout: Layout, special: float = 0.0,
                   grid: tuple[float, float] | None = None) -> float:
    """Vectors per page of a pooled layout from the full count (``special``: non-patch vectors)."""
    return layout.vectors_per_page(vectors_per_page, special, grid)


def load_prices(path: str | None) -> Prices:
    if not path:
        return Prices()
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    unknown = set(data) - set(Prices.__dataclass_fields__)
    if unknown:
        raise UsageError(f"prices file {path}: unknown keys {sorted(unknown)} (known: {sorted(Prices.__dataclass_fields__)})")
    return Prices(**{k: float(v) for k, v in data.items()})
