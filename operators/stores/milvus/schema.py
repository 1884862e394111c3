"""Which Milvus collections and fields hold which layouts, on which server, with which index.

One logical index (``--collection NAME``) becomes:

- ``NAME_pages``: one row per page (primary key ``page_id``; ``doc_id``, ``doc_version``,
  ``source_uri``, ``page_number``) and one vector field per single-vector layout (``sv_mean``,
  ``sv_fde``), each with its own index and metric. On Milvus >= 2.6.4 with ``--milvus-mv-mode
  struct`` (an explicit opt-in: not yet run against a server) it also holds each multi-vector
  layout as an array-of-structs field with an embedding-list index and the MAX_SIM metric.
- ``NAME_patches`` (``mv``) and ``NAME_patches_<rest>`` (``mv-pool3`` -> ``_patches_pool3``):
  one row per vector with the page key, for multi-vector layouts in ``rows`` mode (Milvus Lite,
  older servers). The vector type follows the layout's encoding where the server has it
  (fp16/bf16 -> FLOAT16_VECTOR, bin -> BINARY_VECTOR with HAMMING, int8 -> INT8_VECTOR on
  >= 2.6) and falls back to FLOAT_VECTOR (Milvus Lite stores float vectors only; bin then
  becomes +-1 floats, whose inner product orders like the Hamming distance).
- ``NAME_text``: the text layer, one row per chunk of a page's text (``chunk_id`` =
  ``<page_id>:<index>``, ``page_id``, ``doc_version``): the chunk's dense vector (``vector``,
  layout ``text``) and, on servers with Milvus' BM25 function (Milvus Lite, Milvus >= 2.5), the
  chunk's analyzed text (``text``) and the BM25 sparse vector Milvus computes from it
  (``sparse``, layout ``text-bm25``, SPARSE_INVERTED_INDEX). Older servers keep dense only.
  (An index built before chunks holds one ``sv_text`` row per page there; search reads both.)

What a server accepts is decided here, from its version, before anything is created: a field
whose index type the server would refuse (or, like Milvus Lite, accept and then fail to build in
the background) fails the run at setup, naming the field and what the server accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from operators.errors import UsageError
from operators.layouts.layout import BM25_LAYOUT, SV_VLM_LAYOUT, TEXT_LAYOUT, Layout  # noqa: F401  (re-exported)
from operators.stores.door import VectorStoreError

PATCH_ID = "patch_id"
VECTOR = "vector"
CORPUS = "corpus"
CHUNK_ID = "chunk_id"
SPARSE = "sparse"
CHUNK_TEXT = "text"
MV_MODES = ("auto", "rows", "struct")
STRUCT_MAX_CAPACITY = 4096  # Milvus' largest array capacity: vectors per page in struct mode


# How each encoding (operators/layouts/encodings.py) is held in a Milvus field: the vector types able
# to hold it, best first, and the one that holds its stored values unchanged (None: none does;
# float16 loses bf16's range, float32 widens it).
ENCODING_VTYPES = {"fp32": ("float",), "fp16": ("float16", "float"), "bf16": ("float16", "float"),
                   "int8": ("int8", "float16", "float"), "bin": ("binary", "float")}
EXACT_VTYPE = {"fp32": "float", "fp16": "float16", "bf16": None, "int8": "int8", "bin": "binary"}


def vtype_for(encoding: str, have: tuple[str, ...] | list[str]) -> str:
    """The best Milvus vector type for an encoding among those a server ``have``s (float always
    serves).

    >>> vtype_for("bin", ("float", "binary")), vtype_for("bf16", ("float",))
    ('binary', 'float')
    """
    return next((v for v in ENCODING_VTYPES[encoding] if v in have), "float")


class MilvusError(VectorStoreError):
    """Milvus cannot be reached, refuses the collection, or a Milvus option is wrong; the
    message never carries secrets."""


class MilvusOptionError(MilvusError, UsageError):
    """A Milvus option (an index, a metric, a mode, the layouts sent) that the store or the server
    would refuse: the user's to fix (exit 2), said before anything is written."""


# ---------------------------------------------------------------------------------------------
# What the server accepts

_FLOAT_INDEXES = ("AUTOINDEX", "FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN", "SCANN")
# Milvus Lite 3.x: its own error message lists these; IVF_PQ, DISKANN and SCANN are accepted at
# create time and then fail in the background index build, so they are refused here.
_LITE_INDEXES = ("AUTOINDEX", "FLAT", "HNSW", "HNSW_SQ", "IVF_FLAT", "IVF_SQ8")
_BINARY_INDEXES = ("AUTOINDEX", "BIN_FLAT", "BIN_IVF_FLAT")


@dataclass(frozen=True)
class ServerInfo:
    raw: str  # what get_server_version() said
    lite: bool
    version: tuple[int, int, int]

    @property
    def label(self) -> str:
        return ("Milvus Lite " if self.lite else "Milvus ") + self.raw

    @property
    def vector_types(self) -> tuple[str, ...]:
        if self.lite:
            return ("float",)
        types = ["float", "binary"]
        # FLOAT16_VECTOR from 2.4: v2.3.5 accepts the schema and the first inserts, then its query
        # node panics ("unsupported data type: Float16Vector") on later inserts into a loaded collection.
        if self.version >= (2, 4, 0):
            types.append("float16")
        if self.version >= (2, 6, 0):
            types.append("int8")
        return tuple(types)

    @property
    def max_vector_fields(self) -> int:
        """Vector fields per collection: one before 2.4, then proxy.maxVectorFieldNum (4; 10 from 2.6)."""
        if self.lite or self.version >= (2, 6, 0):
            return 10
        return 4 if self.version >= (2, 4, 0) else 1

    @property
    def struct_arrays(self) -> bool:
        """Array-of-structs fields with embedding-list indexes and MAX_SIM (Milvus >= 2.6.4)."""
        return not self.lite and self.version >= (2, 6, 4)

    @property
    def bm25(self) -> bool:
        """Milvus' BM25 function (analyzed VARCHAR -> sparse vector): Milvus Lite, Milvus >= 2.5."""
        return self.lite or self.version >= (2, 5, 0)

    def index_types(self, vtype: str) -> tuple[str, ...]:
        if vtype == "sparse":
            return ("SPARSE_INVERTED_INDEX",) if self.bm25 else ()
        if vtype == "struct":
            return ("HNSW",) if self.struct_arrays else ()
        if vtype not in self.vector_types:
            return ()
        if self.lite:
            return _LITE_INDEXES
        if vtype == "binary":
            return _BINARY_INDEXES
        if vtype == "int8":
            return ("AUTOINDEX", "HNSW")
        extra = ("HNSW_SQ", "HNSW_PQ", "HNSW_PRQ") if self.version >= (2, 6, 0) else ()
        base = _FLOAT_INDEXES if vtype == "float" else tuple(i for i in _FLOAT_INDEXES if i != "SCANN")
        return base + extra


def server_info(raw: str) -> ServerInfo:
    """``milvus_lite-3.2.2`` -> Milvus Lite; ``v2.3.5``, ``v2.6.4-...`` -> that server version.
    An unparseable version is taken as 2.4.0 (float, float16, binary; no struct arrays)."""
    raw = str(raw).strip()
    lite = raw.startswith("milvus_lite")
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", raw)
    version = tuple(int(x) for x in m.groups()) if m else (2, 4, 0)
    return ServerInfo(raw=raw, lite=lite, version=version)


# ---------------------------------------------------------------------------------------------
# Index choices (--milvus-index LAYOUT=TYPE[:key=value,...])

INDEX_PARAMS = {
    "AUTOINDEX": set(), "FLAT": set(), "BIN_FLAT": set(), "DISKANN": set(),
    "HNSW": {"M", "efConstruction"}, "HNSW_SQ": {"M", "efConstruction", "sq_type"},
    "HNSW_PQ": {"M", "efConstruction", "m", "nbits"}, "HNSW_PRQ": {"M", "efConstruction", "m", "nbits", "nrq"},
    "IVF_FLAT": {"nlist"}, "IVF_SQ8": {"nlist"}, "IVF_PQ": {"nlist", "m", "nbits"},
    "BIN_IVF_FLAT": {"nlist"}, "SCANN": {"nlist", "with_raw_data"}, "SPARSE_INVERTED_INDEX": set(),
}
# Defaults that older servers require (v2.3 refuses HNSW without M and efConstruction).
INDEX_DEFAULTS = {"HNSW": {"M": 16, "efConstruction": 200}, "HNSW_SQ": {"M": 16, "efConstruction": 200},
                  "IVF_FLAT": {"nlist": 1024}, "IVF_SQ8": {"nlist": 1024}, "IVF_PQ": {"nlist": 1024},
                  "BIN_IVF_FLAT": {"nlist": 1024}, "SCANN": {"nlist": 1024}}
METRICS = {"float": ("IP", "COSINE", "L2"), "float16": ("IP", "COSINE", "L2"), "int8": ("IP", "COSINE", "L2"),
           "binary": ("HAMMING", "JACCARD"), "struct": ("MAX_SIM_IP", "MAX_SIM_COSINE"), "sparse": ("BM25",)}
DEFAULT_METRIC = {"float": "IP", "float16": "IP", "int8": "IP", "binary": "HAMMING", "struct": "MAX_SIM_IP",
                  "sparse": "BM25"}


@dataclass(frozen=True)
class IndexSpec:
    index_type: str = "AUTOINDEX"
    params: tuple[tuple[str, object], ...] = ()
    metric: str | None = None

    def params_dict(self) -> dict:
        return {**INDEX_DEFAULTS.get(self.index_type, {}), **dict(self.params)}

    def __str__(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in self.params_dict().items())
        return self.index_type + (f":{p}" if p else "") + (f" ({self.metric})" if self.metric else "")


def _number(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def parse_index_specs(items: list[str] | tuple[str, ...]) -> dict[str, IndexSpec]:
    """``["sv-mean=HNSW:M=16,efConstruction=200", "mv=IVF_PQ:nlist=256,m=32", "*=HNSW"]`` ->
    {layout: IndexSpec}; ``metric=...`` among the parameters sets the metric."""
    out: dict[str, IndexSpec] = {}
    for item in items:
        if "=" not in item:
            raise MilvusOptionError(f"milvus_index: {item!r} is not LAYOUT=TYPE[:key=value,...] (e.g. sv-mean=HNSW:M=16)")
        layout, rest = item.split("=", 1)
        layout = layout.strip()
        itype, _, params = rest.partition(":")
        itype = itype.strip().upper()
        if itype not in INDEX_PARAMS:
            raise MilvusOptionError(f"milvus_index: {layout}: unknown index type {itype!r} (known: {', '.join(INDEX_PARAMS)})")
        kv, metric = {}, None
        for p in filter(None, (x.strip() for x in params.split(","))):
            k, eq, v = p.partition("=")
            if not eq:
                raise MilvusOptionError(f"milvus_index: {layout}: parameter {p!r} is not key=value")
            if k == "metric":
                metric = v.strip().upper()
                continue
            if k not in INDEX_PARAMS[itype]:
                allowed = ", ".join(sorted(INDEX_PARAMS[itype])) or "none"
                raise MilvusOptionError(f"milvus_index: {layout}: {itype} has no parameter {k!r} (it takes: {allowed}; and metric)")
            kv[k] = _number(v.strip())
        if layout in out:
            raise MilvusOptionError(f"milvus_index: {layout} given twice")
        out[layout] = IndexSpec(itype, tuple(sorted(kv.items())), metric)
    return out


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class FieldPlan:
    layout: str  # layout name (sv-mean, mv-pool3-int8, ...), "text" or "text-bm25"
    collection: str
    field: str
    vtype: str  # float | float16 | binary | int8 | struct (array of structs of float vectors) | sparse (BM25)
    dim: int  # elements per vector (bits for binary)
    mode: str  # page (one row per page) | rows (one row per vector) | struct (one row per page) | chunks (text)
    index: IndexSpec
    encoding: str = "fp32"  # the layout's stored encoding in Parquet

    @property
    def metric(self) -> str:
        return self.index.metric or DEFAULT_METRIC[self.vtype]

    @property
    def column(self) -> str:
        """The layout's column in OUT/pages."""
        if self.layout in (TEXT_LAYOUT, BM25_LAYOUT):
            return "text_chunks" if self.mode == "chunks" else "sv_text"
        return self.layout.replace("-", "_")

    @property
    def anns_field(self) -> str:
        return f"{self.field}[{VECTOR}]" if self.mode == "struct" else self.field

    def describe(self) -> dict:
        return {"collection": self.collection, "field": self.field, "vector_type": self.vtype, "dim": self.dim,
                "mode": self.mode, "index": self.index.index_type, "index_params": self.index.params_dict(),
                "metric": self.metric}


@dataclass
class MilvusPlan:
    server: ServerInfo
    collection: str
    fields: list[FieldPlan]
    mv_mode: str  # rows | struct (resolved)
    partition_key: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def pages_collection(self) -> str:
        return f"{self.collection}_pages"

    @property
    def collections(self) -> list[str]:
        seen = [self.pages_collection]
        for f in self.fields:
            if f.collection not in seen:
                seen.append(f.collection)
        return seen

    def by_layout(self, layout: str) -> FieldPlan | None:
        return next((f for f in self.fields if f.layout == layout), None)

    def in_collection(self, collection: str) -> list[FieldPlan]:
        return [f for f in self.fields if f.collection == collection]

    def summary(self) -> dict:
        return {"server": self.server.label, "mv_mode": self.mv_mode, "partition_key": CORPUS if self.partition_key else None,
                "fields": {f.layout: f.describe() for f in self.fields}, "notes": list(self.notes)}


def patches_collection(collection: str, layout_name: str) -> str:
    """``mv`` -> NAME_patches, ``mv-pool3-int8`` -> NAME_patches_pool3_int8."""
    rest = layout_name[len("mv"):].lstrip("-").replace("-", "_")
    return f"{collection}_patches" + (f"_{rest}" if rest else "")


def plan_fields(server: ServerInfo, collection: str, layouts: list[Layout], dim: int, *, fde_dim: int | None = None,
                text_dim: int | None = None, index_specs: dict[str, IndexSpec] | None = None, mv_mode: str = "auto",
                milvus_layouts: list[str] | None = None, partition_key: bool = False,
                extra_sv: dict[str, int] | None = None, existing_page_fields: set[str] | None = None,
                text_per_page: bool = False) -> MilvusPlan:
    """Decide every vector field, and check it against the server, before anything is created.

    ``extra_sv``: page vectors of other models, by layout name (``{"sv-vlm": 1024}``);
    ``existing_page_fields``: the fields of a page collection that exists already (a layout or
    model added to an index: a collection's fields cannot be added to, so a new page-level
    vector gets a collection of its own, like on servers with one vector field per collection);
    ``text_per_page``: the text layer as it was before chunks, one ``sv_text`` row per page (an
    index built then, whose ``NAME_text`` or archive has no chunks), dense only."""
    specs = dict(index_specs or {})
    default = specs.pop("*", None)
    if mv_mode not in MV_MODES:
        raise MilvusOptionError(f"milvus_mv_mode: {mv_mode!r} is not one of {', '.join(MV_MODES)}")
    notes = []
    if mv_mode == "struct" and not server.struct_arrays:
        raise MilvusOptionError(f"milvus_mv_mode: struct needs Milvus >= 2.6.4 (array of structs); {server.label} has "
                          f"no such field: use rows")
    if partition_key and not server.lite and server.version < (2, 4, 0):
        raise MilvusOptionError(f"milvus_partition_key: {server.label} loses rows when upserting into a collection with a "
                          f"partition key (seen on v2.3.5): use Milvus >= 2.4, or one --collection per corpus")
    # auto: one row per vector, the layout the tests run against real servers. The array-of-structs
    # field (Milvus >= 2.6.4) has run against a recording stand-in only, never a server: an
    # explicit opt-in until one has.
    resolved_mode = mv_mode if mv_mode != "auto" else "rows"
    if mv_mode == "auto":
        notes.append(f"multi-vector layouts as one row per vector ({server.label})"
                     + ("; --milvus-mv-mode struct uses array-of-structs fields (not yet run against a server)"
                        if server.struct_arrays else ""))
    extra_sv = dict(extra_sv or {})
    run_names = [lay.name for lay in layouts] + list(extra_sv) + ([TEXT_LAYOUT] if text_dim else [])
    wanted = run_names if not milvus_layouts else list(dict.fromkeys(milvus_layouts))
    for name in wanted:
        if name not in run_names:
            raise MilvusOptionError(f"milvus_layouts: {name!r} is not a layout of this run (its layouts: {', '.join(run_names)})")
    if "sv-mean" in wanted:
        wanted.remove("sv-mean")
    wanted.insert(0, "sv-mean")  # the page collection's key vector: every page has one; first
    for name in specs:
        if name not in wanted:
            raise MilvusOptionError(f"milvus_index: {name!r} is not a layout written to Milvus (those: {', '.join(wanted)})")
    by_name = {lay.name: lay for lay in layouts}
    pages = f"{collection}_pages"
    widened: list[str] = []
    decoded: list[str] = []  # encoded single vectors, held decoded
    fields: list[FieldPlan] = []
    def page_home(column: str) -> str:
        room = sum(1 for f in fields if f.collection == pages) < server.max_vector_fields
        fits = existing_page_fields is None or column in existing_page_fields
        return pages if room and fits else f"{collection}_{column}"

    for name in wanted:
        if name in extra_sv:
            home = page_home(name.replace("-", "_"))
            fp = FieldPlan(name, home, name.replace("-", "_"), "float", int(extra_sv[name]), "page",
                           specs.get(name, default or IndexSpec()))
        elif name == TEXT_LAYOUT and text_per_page:
            fp = FieldPlan(name, f"{collection}_text", "sv_text", "float", int(text_dim), "page",
                           specs.get(name, default or IndexSpec()))
            notes.append(f"{fp.collection} was built before chunks (a vector per page): its text layer stays dense "
                         f"per page, without BM25; ingest into a new OUT for chunks and BM25")
        elif name == TEXT_LAYOUT:
            fp = FieldPlan(name, f"{collection}_text", VECTOR, "float", int(text_dim), "chunks",
                           specs.get(name, default or IndexSpec()))
            if server.bm25:
                fields.append(FieldPlan(BM25_LAYOUT, fp.collection, SPARSE, "sparse", 0, "chunks",
                                        IndexSpec("SPARSE_INVERTED_INDEX")))
            else:
                notes.append(f"lexical search unavailable on {server.label}: dense text only "
                             f"(BM25 needs Milvus >= 2.5 or Milvus Lite)")
        else:
            lay = by_name[name]
            if not lay.is_multi_vector:
                d = lay.dim(dim, fde_dim, extra_sv.get(SV_VLM_LAYOUT))
                # sv-mean keys the page collection; other single vectors join it while the server
                # allows more vector fields per collection, else get a page-level collection each.
                home = pages if name == "sv-mean" else page_home(lay.column)
                fp = FieldPlan(name, home, lay.column, "float", int(d), "page", specs.get(name, default or IndexSpec()),
                               lay.encoding)
                if lay.encoding != "fp32":  # Milvus gets the decoded vector; the archive keeps the encoding
                    decoded.append(name)
            elif resolved_mode == "struct":
                spec = specs.get(name) or (default if default and default.index_type == "HNSW" else IndexSpec("HNSW"))
                fp = FieldPlan(name, pages, lay.column, "struct", dim, "struct", spec, lay.encoding)
            else:
                vtype = vtype_for(lay.encoding, server.vector_types)
                spec = specs.get(name, default or IndexSpec())
                if vtype == "float16" != EXACT_VTYPE[lay.encoding]:
                    notes.append(f"{name}: stored as FLOAT16_VECTOR ({server.label} has no indexable {lay.encoding} vectors)")
                if vtype == "float" != EXACT_VTYPE[lay.encoding]:
                    widened.append(name)
                fp = FieldPlan(name, patches_collection(collection, name), VECTOR, vtype, dim, "rows", spec, lay.encoding)
        _check_field(server, fp)
        fields.append(fp)
    if widened:
        notes.append(f"{', '.join(widened)}: stored as FLOAT_VECTOR ({server.label} has no vector type closer to the "
                     f"layout's encoding)")
    if decoded:
        notes.append(f"{', '.join(decoded)}: stored as FLOAT_VECTOR, decoded from the archive's encoding (single "
                     f"vectors are float32 in Milvus; the Parquet column keeps the encoded bytes)")
    limit = server.max_vector_fields
    n_page_vectors = sum(1 for f in fields if f.collection == pages)
    if n_page_vectors > limit:
        raise MilvusOptionError(f"milvus_layouts: {n_page_vectors} vector fields in {pages} ({', '.join(f.layout for f in fields if f.collection == pages)}); "
                          f"{server.label} allows {limit} per collection: write fewer layouts to Milvus (--milvus-layouts)")
    return MilvusPlan(server, collection, fields, resolved_mode, partition_key, notes)


def _check_field(server: ServerInfo, fp: FieldPlan) -> None:
    accepted = server.index_types(fp.vtype)
    itype = fp.index.index_type
    if itype not in accepted:
        raise MilvusOptionError(
            f"milvus_index: {fp.layout} ({fp.vtype} vectors in {fp.collection}.{fp.field}) cannot use {itype} on "
            f"{server.label}; it accepts: {', '.join(accepted)}")
    if fp.metric not in METRICS[fp.vtype]:
        raise MilvusOptionError(f"milvus_index: {fp.layout}: metric {fp.metric} does not apply to {fp.vtype} vectors "
                          f"(use {', '.join(METRICS[fp.vtype])})")
    m = fp.index.params_dict().get("m")
    if itype in ("IVF_PQ", "HNSW_PQ", "HNSW_PRQ") and m and fp.dim % int(m):
        raise MilvusOptionError(f"milvus_index: {fp.layout}: {itype} m={m} must divide the dimension {fp.dim}")
    if fp.dim > 32768 and fp.vtype != "binary":
        raise MilvusOptionError(f"{fp.layout}: dimension {fp.dim} exceeds Milvus' 32768 (lower --fde-reps/--fde-proj-dim)")


# ---------------------------------------------------------------------------------------------
# Schemas (pymilvus objects)


def _dtype(vtype: str):
    from pymilvus import DataType

    return {"float": DataType.FLOAT_VECTOR, "float16": DataType.FLOAT16_VECTOR, "binary": DataType.BINARY_VECTOR,
            "int8": DataType.INT8_VECTOR}[vtype]


def build_collection(plan: MilvusPlan, collection: str):
    """(schema, index_params) for one collection of the plan; pymilvus objects, no server needed."""
    from pymilvus import DataType, MilvusClient, StructFieldSchema

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    fields = plan.in_collection(collection)
    key = dict(max_length=64)
    if collection == plan.pages_collection:
        schema.add_field("page_id", DataType.VARCHAR, is_primary=True, **key)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=32)
        schema.add_field("doc_version", DataType.VARCHAR, max_length=256)
        schema.add_field("source_uri", DataType.VARCHAR, max_length=4096)
        schema.add_field("page_number", DataType.INT32)
    elif fields and fields[0].mode == "chunks":
        from pymilvus import Function, FunctionType

        from operators.models.text_layer import ANALYZER, MAX_BYTES

        # The chunk's page and version as plain fields (deletes by version, like patch rows); its
        # text only where Milvus' BM25 reads it (it is in the Parquet archive anyway).
        schema.add_field(CHUNK_ID, DataType.VARCHAR, is_primary=True, max_length=80)
        schema.add_field("page_id", DataType.VARCHAR, **key)
        schema.add_field("doc_version", DataType.VARCHAR, max_length=256)
        if any(f.vtype == "sparse" for f in fields):
            schema.add_field(CHUNK_TEXT, DataType.VARCHAR, max_length=MAX_BYTES, enable_analyzer=True,
                             analyzer_params=ANALYZER)
            schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=[CHUNK_TEXT],
                                         output_field_names=[SPARSE]))
    elif fields and fields[0].mode == "rows":
        # As few scalars as possible on the rows that are most numerous (and most costly to
        # send): the document is the page_id's prefix, the vector's index the patch_id's suffix.
        schema.add_field(PATCH_ID, DataType.VARCHAR, is_primary=True, max_length=80)
        schema.add_field("page_id", DataType.VARCHAR, **key)
        schema.add_field("doc_version", DataType.VARCHAR, max_length=256)
    else:  # the text layer, or a single-vector layout in a page-level collection of its own
        schema.add_field("page_id", DataType.VARCHAR, is_primary=True, **key)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=32)
        schema.add_field("doc_version", DataType.VARCHAR, max_length=256)
    if plan.partition_key:
        schema.add_field(CORPUS, DataType.VARCHAR, max_length=128, is_partition_key=True)
    index = MilvusClient.prepare_index_params()
    for fp in fields:
        if fp.mode == "struct":
            struct = StructFieldSchema()
            struct.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=fp.dim)
            schema.add_field(fp.field, DataType.ARRAY, element_type=DataType.STRUCT, struct_schema=struct,
                             max_capacity=STRUCT_MAX_CAPACITY)
        elif fp.vtype == "sparse":
            schema.add_field(fp.field, DataType.SPARSE_FLOAT_VECTOR)
        else:
            schema.add_field(fp.field, _dtype(fp.vtype), dim=fp.dim)
        index.add_index(fp.anns_field, index_type=fp.index.index_type, metric_type=fp.metric,
                        params=fp.index.params_dict())
    return schema, index
