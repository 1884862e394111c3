"""LanceDB behind the store door: an index as Lance tables (operators/stores/lancedb/tables.py) in a
local folder or under an object-store prefix (``--vectors lancedb:PATH``).

The write contract is Lance's own distributed write: a write worker writes a unit's rows as
*fragments* (data files no version names yet) and returns their metadata (a few hundred bytes a
fragment); the driver's ``commit``, just before the unit's ledger record, makes them one new table
version in one transaction with the deletion of the unit's documents' older rows, so readers go
from the old rows to the new at once. A unit whose fragments were written but never committed
leaves files no version names (invisible), removed when the next run starts (it holds OUT's lock:
no writer is in flight). A commit that died between the table's version and the ledger record
leaves rows the ledger does not know: the ledger keeps those documents as suspects, as for any
store whose writes a commit makes visible before its record.

Versions: Lance keeps every version; pagemill keeps those of the last ``--lancedb-keep-days`` days
(7 by default: time travel, readers of an older version) and prunes older ones, and compacts the
small fragments units leave, at the end of every run (``optimize``).
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta
from urllib.parse import urlparse

import numpy as np

from operators import schema as S
from operators.errors import UsageError
from operators.faults import checkpoint
from operators.layouts.layout import TEXT_LAYOUT
from operators.stores.door import Hit, IndexShape, StoreWriter, VectorStore, VectorStoreError
from operators.stores.lancedb.tables import (
    CHUNK_TEXT,
    CORPUS,
    PAGES,
    TEXT,
    VECTOR,
    Plan,
    chunk_rows,
    multi_vectors,
    page_rows,
    plan_tables,
)

# Lance's engine logs warnings (a k-means with few rows, deprecations) to stderr from Rust: errors
# only, unless the user asks for more (set before lance is imported in this process).
os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("LANCEDB_LOG", "error")

PREFIX = "lancedb:"
DEFAULT_FOLDER = "lancedb"  # lancedb: with no path: OUT/lancedb
KEEP_DAYS = 7.0
INDEX_TYPES = {"IVF_PQ": {"num_partitions", "num_sub_vectors", "num_bits"},
               "IVF_HNSW_SQ": {"num_partitions", "m", "ef_construction"},
               "IVF_HNSW_PQ": {"num_partitions", "num_sub_vectors", "m", "ef_construction"},
               "IVF_FLAT": {"num_partitions"}}
MIN_INDEX_VECTORS = 256  # below, IVF_PQ builds an empty index without a word: no index is asked for then
COMMIT_ATTEMPTS = 5


class LanceError(VectorStoreError):
    """LanceDB cannot be used (its folder or bucket, a refused option)."""


class LanceOptionError(LanceError, UsageError):
    """A LanceDB option the user can fix."""


def handles(uri: str) -> bool:
    return uri.startswith(PREFIX)


def location(uri: str, out: str | None) -> str:
    """``lancedb:PATH`` -> PATH (``lancedb:`` alone: OUT's ``lancedb`` folder)."""
    path = uri[len(PREFIX):]
    if not path:
        if not out:
            raise LanceOptionError("--vectors lancedb: names no folder and there is no OUT to put it in")
        path = out.rstrip("/") + "/" + DEFAULT_FOLDER
    if path.startswith("file://"):
        path = urlparse(path).path
    return path if "://" in path else os.path.abspath(path)


def storage_options(path: str, s3_options=None) -> dict:
    """What Lance's object store needs for an ``s3://`` path: the endpoint (and plain http where it
    is one) and the region, as pagemill's S3 options say; the credentials come from the process'
    environment, as boto3's do, never from here."""
    if not path.startswith("s3://"):
        return {}
    endpoint = (getattr(s3_options, "endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    out = {}
    if endpoint:
        out["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            out["allow_http"] = "true"
    region = getattr(s3_options, "region", None) or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        out["aws_region"] = region
    return out


def parse_index_specs(items) -> dict[str, tuple[str, dict]]:
    """``["mv=IVF_PQ:num_partitions=16,num_sub_vectors=16", "sv-mean=IVF_HNSW_SQ"]`` -> specs."""
    out = {}
    for item in items or ():
        layout, eq, rest = item.partition("=")
        if not eq:
            raise LanceOptionError(f"lancedb_index: {item!r} is not LAYOUT=TYPE[:key=value,...] (e.g. mv=IVF_PQ)")
        itype, _, params = rest.partition(":")
        itype = itype.strip().upper()
        if itype == "NONE" and not params:
            out[layout.strip()] = ("NONE", {})
            continue
        if itype not in INDEX_TYPES:
            raise LanceOptionError(f"lancedb_index: {layout}: unknown index type {itype!r} (known: {', '.join(INDEX_TYPES)}; "
                                   f"NONE: no index)")
        kv = {}
        for p in filter(None, (x.strip() for x in params.split(","))):
            k, eq, v = p.partition("=")
            if not eq or k not in INDEX_TYPES[itype]:
                raise LanceOptionError(f"lancedb_index: {layout}: {itype} takes {', '.join(sorted(INDEX_TYPES[itype]))}, "
                                       f"not {p!r}")
            kv[k] = int(v)
        out[layout.strip()] = (itype, kv)
    return out


def _in(column: str, values) -> str:
    quoted = ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


class LanceWriter(StoreWriter):
    """What a write worker holds: the tables' locations, their schemas and the corpus (no
    secret: the object store's credentials come from the worker's environment). ``layouts``: a
    writer that gives pages the index holds already new layouts (relayout): it rewrites their
    rows in the tables those layouts are in, and the commit replaces them by page."""

    def __init__(self, plan: Plan, root: str, options: dict, schemas: dict, corpus: str,
                 layouts: list[str] | None = None):
        self.plan = plan
        self.root = root
        self.options = options
        self.schemas = schemas  # table -> Arrow schema
        self.corpus = corpus
        self.layouts = layouts

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _tables(self) -> list[str]:
        if self.layouts is None:
            return list(self.schemas)
        wanted = [] if set(self.layouts) <= {TEXT_LAYOUT} else [PAGES]
        return wanted + ([TEXT] if TEXT_LAYOUT in self.layouts and TEXT in self.schemas else [])

    def write(self, unit_id: str, pages) -> dict:
        """The pages' rows as fragments of the pages table (and their chunks of the text table),
        committed by the driver with the unit."""
        from lance.fragment import write_fragments

        out: dict = {"rows": {}, "fragments": {}, "path": "fragments"}
        if self.layouts is not None:
            out["pages"] = pages[S.PAGE_ID].to_pylist()
        for name in self._tables():
            rows = (page_rows(pages, self.plan, self.corpus, self.schemas[PAGES]) if name == PAGES
                    else chunk_rows(pages, self.plan, self.corpus))
            table = self.plan.table(name)
            out["rows"][table] = 0
            if rows is None or not rows.num_rows:
                continue
            frags = write_fragments(rows, _table_uri(self.root, table), schema=rows.schema,
                                    storage_options=self.options or None)
            out["fragments"][table] = [json.dumps(f.to_json()) for f in frags]
            out["rows"][table] = rows.num_rows
            checkpoint("lance_fragments")
        return out

    def delete_other_versions(self, versions: dict[str, str | None]) -> int:
        return 0  # the driver's commit replaces the unit's documents, in the unit's transaction


def _table_uri(root: str, table: str) -> str:
    return f"{root.rstrip('/')}/{table}.lance"


class LanceStore(VectorStore):
    name = "lancedb"
    title = "LanceDB"
    single_process = None
    suspects_record = "lancedb_suspects"

    def __init__(self, uri: str, out: str | None = None, *, index_specs=(), keep_days: float = KEEP_DAYS,
                 s3_options=None):
        self.uri = uri
        self.root = location(uri, out)
        self.options = storage_options(self.root, s3_options)
        self.s3_options = s3_options
        self.index_specs = parse_index_specs(index_specs)
        self.keep_days = keep_days
        self.plan: Plan | None = None
        self._indexes: dict | None = None  # the vector indexes kept (finish), for _index.json
        self.dropped: list[str] = []
        self.corpus = "default"
        self.notes: list[str] = []
        self._db = None

    @classmethod
    def from_options(cls, uri: str, options: dict, out: str | None = None, s3_options=None) -> LanceStore:
        keep = options.get("lancedb_keep_days")
        return cls(uri, out, index_specs=options.get("lancedb_index") or (), s3_options=s3_options,
                   keep_days=KEEP_DAYS if keep is None else float(keep))

    @staticmethod
    def check_options(options: dict, out: str) -> str | None:
        try:
            parse_index_specs(options.get("lancedb_index") or ())
        except LanceOptionError as e:
            return str(e)
        return None

    @property
    def label(self) -> str:
        return f"LanceDB at {self.root}"

    @property
    def local(self) -> bool:
        return "://" not in self.root

    def _connect(self):
        import lancedb

        if self._db is None:
            try:
                self._db = lancedb.connect(self.root, storage_options=self.options or None)
            except Exception as e:
                raise LanceError(f"cannot use LanceDB at {self.root}: {_first_line(e)}") from None
        return self._db

    def _uri(self, table: str) -> str:
        return _table_uri(self.root, table)

    def _dataset(self, table: str):
        import lance

        return lance.dataset(self._uri(table), storage_options=self.options or None)

    def _tables(self) -> list[str]:
        db = self._connect()
        return list(db.list_tables().tables) if hasattr(db.list_tables(), "tables") else list(db.list_tables())

    # -- the index's tables --------------------------------------------------------------------------

    def check(self, shape: IndexShape) -> None:
        held = [c.layout for c in plan_tables(shape).columns]
        for layout in self.index_specs:
            if layout not in held:
                raise LanceOptionError(f"lancedb_index: {layout!r} is not a layout LanceDB holds for this index "
                                       f"(it holds {', '.join(held)})")

    def prepare(self, shape: IndexShape, recreate: bool = False, fresh: bool = False) -> list[str]:
        self.plan = plan_tables(shape)
        self.corpus = shape.corpus
        self.dropped = []
        db, have = self._connect(), set(self._tables())
        mine = [t for t in have if t.startswith(shape.base + "_") and t[len(shape.base) + 1:] in (PAGES, TEXT)]
        if recreate or (fresh and mine and not any(db.open_table(t).count_rows() for t in mine)):
            for t in mine:
                db.drop_table(t)
            self.dropped = mine
            have -= set(mine)
        try:
            for name, schema in self.schemas().items():
                table = self.plan.table(name)
                if table not in have:
                    db.create_table(table, schema=schema)
                    continue
                held = db.open_table(table).schema
                for f in schema:
                    if f.name in held.names and held.field(f.name).type != f.type:
                        raise LanceOptionError(f"table {table!r} holds {f.name} as {held.field(f.name).type}, this "
                                               f"run writes {f.type}: use another --collection, or rebuild it")
                new = [f for f in schema if f.name not in held.names]
                if new:  # a layout added to the index: a column of nulls until its pages are given it
                    self._dataset(table).add_columns(new)
        except LanceError:
            raise
        except Exception as e:
            raise LanceError(f"cannot use LanceDB at {self.root}: {_first_line(e)}") from None
        return [f"tables {', '.join(self.plan.tables)} in {self.root}"] + list(self.plan.notes)

    def schemas(self) -> dict:
        out = {PAGES: self.plan.pages_schema()}
        if self.plan.text_dim:
            out[TEXT] = self.plan.text_schema()
        return out

    def discover(self, base: str) -> list[str]:
        import pyarrow as pa

        from operators.stores.lancedb.tables import KEY_FIELDS, Column

        have = set(self._tables())
        if f"{base}_{PAGES}" not in have:
            raise LanceError(f"no table {base}_{PAGES} in LanceDB at {self.root}: nothing indexed under --collection "
                             f"{base}")
        schema = self._connect().open_table(f"{base}_{PAGES}").schema
        keys = {f.name for f in KEY_FIELDS}
        columns = []
        for f in schema:
            if f.name in keys:
                continue
            multi = pa.types.is_list(f.type)
            dim = f.type.value_type.list_size if multi else f.type.list_size
            columns.append(Column(f.name.replace("_", "-"), f.name, multi, dim, f))
        text_dim = None
        if f"{base}_{TEXT}" in have:
            text_dim = self._connect().open_table(f"{base}_{TEXT}").schema.field(VECTOR).type.list_size
        self.plan = Plan(base, tuple(columns), text_dim)
        return []

    def layouts(self) -> list[str]:
        return self.plan.layouts() if self.plan else []

    def remove(self, base: str) -> list[str]:
        gone = sorted(t for t in self._tables() if t.startswith(base + "_"))
        for t in gone:
            self._connect().drop_table(t)
        return gone

    def drop_layouts(self, names: list[str]) -> list[str]:
        notes = []
        for name in names:
            column = name.replace("-", "_")
            table = self._connect().open_table(self.plan.table(PAGES))
            if column in table.schema.names:
                table.drop_columns([column])
                notes.append(f"{column} dropped from {self.plan.table(PAGES)} ({name} removed from the index)")
        return notes

    # -- a run -----------------------------------------------------------------------------------------

    def start(self, ledger) -> list[str]:
        """Files of fragments no version names (a unit written and never committed: a run that
        died) go now; this run holds OUT's lock, so no writer is in flight."""
        removed = sum(self._cleanup(table).data_files_removed for table in self.plan.tables)
        return [f"{removed} data files of uncommitted fragments removed"] if removed else []

    def _cleanup(self, table: str):
        """Versions older than ``keep_days`` and the files no kept version names (fragments of a
        unit never committed, or of a write batch retried elsewhere): only while no writer is in
        flight (the run's start and end)."""
        return self._dataset(table).cleanup_old_versions(older_than=timedelta(days=self.keep_days),
                                                         delete_unverified=True)

    def writer(self, layouts: list[str] | None = None) -> StoreWriter:
        return LanceWriter(self.plan, self.root, self.options, self.schemas(), self.corpus, layouts)

    def commit(self, unit_id: str, results: list[dict], replaces: dict[str, str | None] | None = None) -> None:
        """The unit's fragments and the deletion of the rows they replace, one transaction a
        table: every row of the documents the store may hold from before (``replaces``: the unit
        brings each one whole), or of the pages a relayout rewrote."""
        from lance.fragment import FragmentMetadata

        doc_ids = sorted(replaces or ())
        for table in self.plan.tables:
            frags = [FragmentMetadata.from_json(j) for r in results for j in r.get("fragments", {}).get(table, [])]
            pages = [p for r in results if table in r.get("rows", {}) for p in r.get("pages", [])]
            if frags or doc_ids or pages:
                self._commit(table, frags, doc_ids, pages, unit_id)

    def _commit(self, table: str, frags: list, doc_ids: list[str], page_ids: list[str], unit_id: str) -> None:
        import lance

        pred = " OR ".join(p for p in (_in(S.DOC_ID, doc_ids) if doc_ids else "",
                                       _in(S.PAGE_ID, page_ids) if page_ids else "") if p)
        for attempt in range(COMMIT_ATTEMPTS):
            ds = self._dataset(table)
            removed, updated = [], []
            if pred:
                addrs = ds.to_table(columns=[], filter=pred, with_row_address=True)["_rowaddr"].to_numpy()
                for fid in sorted({int(a) >> 32 for a in addrs}):
                    kept = ds.get_fragment(fid).delete(pred)
                    (removed.append(fid) if kept is None else updated.append(kept))
            if not (frags or removed or updated):
                return
            op = lance.LanceOperation.Update(removed_fragment_ids=removed, updated_fragments=updated,
                                             new_fragments=frags)
            try:
                lance.LanceDataset.commit(self._uri(table), op, read_version=ds.version,
                                          storage_options=self.options or None)
                return
            except Exception as e:  # another writer's version in between: the deletions again, on it
                if "onflict" not in str(e) or attempt == COMMIT_ATTEMPTS - 1:
                    raise LanceError(f"LanceDB commit of unit {unit_id} to {table} failed: {_first_line(e)}") from None
                time.sleep(0.1 * (attempt + 1))

    def delete_other_versions(self, versions: dict[str, str | None]) -> int:
        """Rows of each document whose version differs (None: every row), now."""
        by_version = {d: v for d, v in versions.items() if v is not None}
        every = [d for d, v in versions.items() if v is None]
        terms = [f"({S.DOC_ID} = '{d}' AND {S.DOC_VERSION} != '{v}')" for d, v in sorted(by_version.items())]
        if every:
            terms.append(_in(S.DOC_ID, every))
        if not terms:
            return 0
        for table in self.plan.tables:
            self._connect().open_table(table).delete(" OR ".join(terms))
        return len(self.plan.tables)

    def finish(self, recorded: dict | None = None) -> dict | None:
        """The run's end (no writer in flight): the indexes (``index_plan``), the text layer's
        full-text index and a scalar index on ``doc_id`` (the commits' deletes) made where
        missing; then ``optimize``: small fragments compacted, new rows folded into every index,
        versions older than ``keep_days`` and files no version names removed."""
        built = self.build_indexes((recorded or {}).get("indexes") or {})
        return {"maintenance": {"indexes": built, **self.optimize()}}

    def record(self) -> dict:
        return {"indexes": self._indexes} if self._indexes is not None else {}

    def optimize(self) -> dict:
        """Each table's small fragments compacted into larger files, its new rows folded into its
        indexes, its old versions and unnamed files removed (``_cleanup``)."""
        compacted = pruned = freed = removed = 0
        for table in self.plan.tables:
            metrics = self._dataset(table).optimize.compact_files()
            compacted += int(metrics.fragments_removed) - int(metrics.fragments_added)
            self._dataset(table).optimize.optimize_indices()
            stats = self._cleanup(table)
            pruned += int(stats.old_versions)
            freed += int(stats.bytes_removed)
            removed += int(stats.data_files_removed)
        return {"fragments_compacted": compacted, "versions_pruned": pruned, "bytes_freed": freed,
                "data_files_removed": removed, "versions_kept_days": self.keep_days}

    def index_plan(self, recorded: dict) -> dict[str, tuple[str, dict]]:
        """The vector indexes the index keeps: ``--lancedb-index`` where given (``NONE``: none for
        that layout), else what ``_index.json`` recorded (a nightly run keeps them)."""
        plan = {k: (v["type"], v.get("params", {})) for k, v in recorded.items() if k in self.layouts()}
        plan.update(self.index_specs)
        return {k: v for k, v in plan.items() if v[0] != "NONE"}

    def build_indexes(self, recorded: dict) -> dict:
        """Each planned index built where it is missing, where its type or parameters changed,
        or where its table has doubled since it was trained (its partitions and codebooks fit the
        rows it saw: a first run's index would not fit a backfill); other runs' rows are folded
        into it by ``optimize``. What is recorded: type, parameters, metric, the rows trained on."""
        from lancedb.index import FTS, BTree, IvfFlat, IvfHnswPq, IvfHnswSq, IvfPq

        configs = {"IVF_PQ": IvfPq, "IVF_HNSW_SQ": IvfHnswSq, "IVF_HNSW_PQ": IvfHnswPq, "IVF_FLAT": IvfFlat}
        pages = self._connect().open_table(self.plan.table(PAGES))
        n = pages.count_rows()
        have = {i.name for i in pages.list_indices()}
        kept, built = {}, {}
        for layout, (itype, params) in self.index_plan(recorded).items():
            c = self.plan.by_layout(layout)
            metric = "cosine" if c.multi else "dot"
            entry = {"type": itype, "params": params, "metric": metric}
            old = recorded.get(layout) or {}
            same = {k: old.get(k) for k in entry} == entry and f"{c.name}_idx" in have
            if same and n < 2 * int(old.get("trained_rows", 0)):
                kept[layout] = old
                continue
            if n < MIN_INDEX_VECTORS:
                kept[layout] = {**entry, "trained_rows": 0}
                built[layout] = f"not yet: {n} rows, an index is trained on {MIN_INDEX_VECTORS} or more"
                continue
            t0 = time.monotonic()
            pages.create_index(c.name, config=configs[itype](distance_type=metric, **params), replace=True,
                               name=f"{c.name}_idx")
            kept[layout] = {**entry, "trained_rows": n}
            built[layout] = f"{itype} trained on {n} rows in {time.monotonic() - t0:.1f} s"
        for layout in [x.layout for x in self.plan.columns if x.layout not in kept]:
            name = f"{self.plan.by_layout(layout).name}_idx"
            if name in have:  # an index the user no longer asks for
                pages.drop_index(name)
                built[layout] = "index dropped: exact search"
        if f"{S.DOC_ID}_idx" not in have:
            pages.create_index(S.DOC_ID, config=BTree(), name=f"{S.DOC_ID}_idx")
        if self.plan.text_dim:
            text = self._connect().open_table(self.plan.table(TEXT))
            names = {i.name for i in text.list_indices()}
            if CHUNK_TEXT + "_idx" not in names:
                text.create_index(CHUNK_TEXT, config=FTS(base_tokenizer="whitespace", lower_case=True, stem=False,
                                                         remove_stop_words=False), name=CHUNK_TEXT + "_idx")
                built["text-bm25"] = "full-text index (BM25) made"
            if f"{S.DOC_ID}_idx" not in names:
                text.create_index(S.DOC_ID, config=BTree(), name=f"{S.DOC_ID}_idx")
        self._indexes = kept
        return built

    def publish(self, collection: str, base: str, retired_base: str | None, generation: int) -> list[str]:
        """Readers find a generation's tables by the index's ``_index.json``: the retired ones go."""
        if not retired_base or retired_base == base:
            return []
        gone = [t for t in self._tables() if t in (f"{retired_base}_{PAGES}", f"{retired_base}_{TEXT}")]
        for t in gone:
            self._connect().drop_table(t)
        return [f"{', '.join(gone)} dropped: generation {generation} ({base}_*) is the index"] if gone else []

    def holds_rows(self) -> bool:
        return any(self._connect().open_table(t).count_rows(f"{CORPUS} = '{self.corpus}'") for t in self.plan.tables)

    def counts(self) -> dict[str, int]:
        return {t: self._connect().open_table(t).count_rows() for t in self.plan.tables}

    def summary(self) -> dict:
        return {"uri": self.root, "tables": self.plan.tables,
                "layouts": {c.layout: {"table": self.plan.table(PAGES), "column": c.name,
                                       "kind": "multi-vector (MaxSim)" if c.multi else "vector (inner product)"}
                            for c in self.plan.columns},
                "notes": list(self.plan.notes)}

    def close(self) -> None:
        self._db = None

    # -- reading ---------------------------------------------------------------------------------------

    def _where(self, corpus: str | None) -> str | None:
        return f"{CORPUS} = '{corpus}'" if corpus else None

    def search(self, layout: str, query: np.ndarray, candidates: int, corpus: str | None = None) -> list[Hit]:
        c = self.plan.by_layout(layout)
        if c is None:
            held = ", ".join(x.layout for x in self.plan.columns)
            shown = "patches" if layout == "mv" else layout
            raise UsageError(f"--stage1 {shown!r}: not in LanceDB (this index holds {held}; or use text)")
        q = np.asarray(query, np.float32)
        search = self._connect().open_table(self.plan.table(PAGES)).search(q, vector_column_name=c.name)
        search = search.distance_type("cosine" if c.multi else "dot").limit(candidates).select([S.PAGE_ID, "_distance"])
        if corpus:
            search = search.where(self._where(corpus))
        n_q = len(q) if c.multi else 1
        # cosine on a multi-vector: N_q - MaxSim; dot: 1 - q.d (higher is better either way)
        return [Hit(r[S.PAGE_ID], float(n_q - r["_distance"])) for r in search.to_list()]

    def text_lists(self) -> dict[str, bool]:
        has = bool(self.plan and self.plan.text_dim)
        return {"bm25": has, "dense": has, "per_chunk": True}

    def search_text(self, kind: str, query, limit: int, corpus: str | None = None) -> list[Hit]:
        table = self._connect().open_table(self.plan.table(TEXT))
        if kind == "bm25":
            search = table.search(query, query_type="fts").limit(limit).select([S.PAGE_ID, "_score"])
            score, key = (lambda r: float(r["_score"])), "_score"
        else:
            search = table.search(np.asarray(query, np.float32), vector_column_name=VECTOR).distance_type("dot")
            search = search.limit(limit).select([S.PAGE_ID, "_distance"])
            score, key = (lambda r: 1.0 - float(r["_distance"])), "_distance"
        if corpus:
            search = search.where(self._where(corpus))
        del key
        return [Hit(r[S.PAGE_ID], score(r)) for r in search.to_list()]

    def fetch(self, layout: str, page_ids: list[str]) -> dict[str, np.ndarray]:
        c = self.plan.by_layout(layout)
        if c is None or not c.multi:
            held = [x.layout for x in self.plan.columns if x.multi]
            raise UsageError(f"--vectors-from: layout {layout!r} is not in LanceDB (it holds: {', '.join(held) or 'none'})")
        t = self._dataset(self.plan.table(PAGES)).to_table(columns=[S.PAGE_ID, c.name], filter=_in(S.PAGE_ID, page_ids))
        return dict(zip(t[S.PAGE_ID].to_pylist(), multi_vectors(t[c.name], c.dim)))

    def count_columns(self) -> list[str]:
        return [S.TEXT_CHUNKS] if self.plan.text_dim else []

    def expected_rows(self, pages: int, vectors: dict[str, int]) -> dict[str, int | None]:
        out = {self.plan.table(PAGES): pages}
        if self.plan.text_dim:
            out[self.plan.table(TEXT)] = vectors.get(S.TEXT_CHUNKS)
        return out

    def measure(self, page_ids: list[str]) -> dict:
        """Per table: its rows, the bytes of its files (data, indexes, the rest: versions,
        deletions, transactions), and per layout the bytes of its column's data."""
        from operators.stores.lancedb.storage import measure

        return measure(self, page_ids)

    # -- the rebuild ---------------------------------------------------------------------------------------

    def archive_columns(self, available: list[str]) -> list[str]:
        keys = [S.PAGE_ID, S.DOC_ID, S.SOURCE_URI, S.DOC_VERSION, S.PAGE_NUMBER, S.IMAGE_URI]
        wanted = keys + [c.name for c in self.plan.columns] + ([S.TEXT, S.TEXT_CHUNKS] if self.plan.text_dim else [])
        return [c for c in dict.fromkeys(wanted) if c in available]

    def load(self, batches, shards: int, bulk_dir: str | None = None, log=None) -> dict:
        """Shard after shard, each one commit of its pages (replacing the rows the tables hold of
        them: running it again after an interruption finishes the job); then the indexes and a
        compaction."""
        if bulk_dir:
            raise LanceOptionError("--bulk-dir is Milvus' bulk import: LanceDB loads by fragments, without it")
        t0, pages, done = time.monotonic(), 0, 0
        writer = LanceWriter(self.plan, self.root, self.options, self.schemas(), self.corpus, layouts=self.layouts())
        key, results = None, []

        def commit():
            nonlocal done
            self.commit(f"load-{done}", results)
            done += 1
            if log is not None:
                log.write(f"[pagemill] load: {done}/{shards} shards, {pages} pages\n")

        for k, table, corpus in batches:
            if k != key and results:
                commit()
                results = []
            key = k
            writer.corpus = corpus
            results.append(writer.write(k, table))
            pages += table.num_rows
        if results:
            commit()
        report = self.finish()
        return {"uri": self.root, "path": "fragments", "shards": shards, "pages": pages, "dropped": self.dropped,
                "row_counts": self.counts(), "wall_s": round(time.monotonic() - t0, 3), **report, **self.summary()}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
