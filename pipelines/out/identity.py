"""What an index is made of, recorded in ``OUT/_index.json`` and checked by every command.

The identity of an index: the model (name, weights, dim, the checkpoint's revision or checksum),
the pixel budget pages are rendered at, the layouts and their parameters, the text and
single-vector models, and the prefix of its tables in the vector store. ``_index.json`` holds the *active*
identity (what readers read) and, during a ``--reindex``, the *pending* one being built beside it
(a new generation: its own ledger, its own tables), swapped in when every document has been
embedded again; the retired generation is cleaned up after the swap.

>>> ModelIdentity("colqwen2-tiny", "random", 128, None, 75264, 28).describe()
'colqwen2-tiny (random weights, 128-d, 75,264 px)'
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from dataclasses import dataclass, field

from operators.io.store import OutputStore
from pipelines.out.keys import INDEX_KEY, PAGES_PREFIX, ledger_prefix

FORMAT = 1


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    weights: str
    dim: int
    checkpoint: str | None  # hub revision or a checksum of a local folder; None for random weights
    max_pixels: int
    multiple: int = 1

    def describe(self) -> str:
        ck = f", {self.checkpoint[:12]}" if self.checkpoint else ""
        return f"{self.name} ({self.weights} weights, {self.dim}-d, {self.max_pixels:,} px{ck})"

    def same_embedding(self, other: ModelIdentity) -> bool:
        """Vectors of one can be searched with queries of the other: same model, weights,
        checkpoint and pixel budget (the rate of a ``sim:`` model is not part of it)."""
        def base(name):
            return name.split("@", 1)[0]

        return (base(self.name), self.weights, self.dim, self.checkpoint, self.max_pixels) == \
            (base(other.name), other.weights, other.dim, other.checkpoint, other.max_pixels)


@dataclass
class IndexIdentity:
    model: ModelIdentity
    layouts: dict[str, dict]  # layout name -> parameters (as in the shards' metadata)
    text_model: dict | None = None  # {"name", "dim"}
    sv_model: dict | None = None  # {"name", "dim"}
    generation: int = 1
    collection: str = "pagemill"  # the --collection the user names (aliases point at this generation's)
    base: str = "pagemill"  # the store's real tables' prefix: <collection>, then <collection>_g<N>
    building: list[str] = field(default_factory=list)  # layouts (or text/sv) added, not yet on every document

    # ``base`` is ``milvus_base`` in the file (format 1, from when Milvus was the only store)
    FILE_NAMES = {"base": "milvus_base"}

    def to_json(self) -> dict:
        return {self.FILE_NAMES.get(k, k): v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> IndexIdentity:
        names = {v: k for k, v in cls.FILE_NAMES.items()}
        d = {names.get(k, k): v for k, v in d.items()}
        d["model"] = ModelIdentity(**d["model"])
        return cls(**d)

    def describe(self) -> str:
        extra = "".join(f", {k} {v['name']}" for k, v in (("text", self.text_model), ("sv", self.sv_model)) if v)
        return f"{self.model.describe()}{extra}"


@dataclass
class IndexState:
    active: IndexIdentity | None = None
    pending: IndexIdentity | None = None  # a --reindex in progress
    retired: IndexIdentity | None = None  # swapped out, its files and tables not yet removed
    history: list[dict] = field(default_factory=list)
    store: dict | None = None  # the vector store: {"kind", "uri" (None: OUT's own default), "indexes"}
    pages: dict = field(default_factory=dict)  # what every run keeps of a page: {"page_images": "webp:1024"}

    def keep_store_record(self, kept: dict | None) -> bool:
        """What the store asks the index to remember (its indexes, ...): True when it changed."""
        if not kept or self.store is None or all(self.store.get(k) == v for k, v in kept.items()):
            return False
        self.store.update(kept)
        return True

    def to_json(self) -> dict:
        return {"format": FORMAT, "active": self.active.to_json() if self.active else None,
                "pending": self.pending.to_json() if self.pending else None,
                "retired": self.retired.to_json() if self.retired else None, "history": self.history,
                "store": self.store, **({"pages": self.pages} if self.pages else {}), "updated_at": time.time()}

    @classmethod
    def from_json(cls, d: dict) -> IndexState:
        load = IndexIdentity.from_json
        return cls(active=load(d["active"]) if d.get("active") else None,
                   pending=load(d["pending"]) if d.get("pending") else None,
                   retired=load(d["retired"]) if d.get("retired") else None, history=d.get("history", []),
                   store=d.get("store"), pages=d.get("pages") or {})


def load_state(store: OutputStore) -> IndexState | None:
    """``_index.json``, or the identity an OUT of an earlier pagemill implies (its shards' metadata),
    or None for an OUT that holds no index yet."""
    if store.exists(INDEX_KEY):
        return IndexState.from_json(json.loads(store.read_bytes(INDEX_KEY)))
    inferred = infer_from_shards(store)
    return IndexState(active=inferred) if inferred else None


def recorded_store(store: OutputStore) -> dict | None:
    """The vector store the index records (``{"kind", "uri", ...}``), or None (an index from
    before the record: OUT's own Milvus Lite file, or the one the options name)."""
    state = load_state(store) if store.exists(INDEX_KEY) else None
    return state.store if state is not None else None


def has_commits(store: OutputStore, generation: int) -> bool:
    """Whether a generation's ledger holds any committed unit (an index is what has been
    committed: ``_index.json`` is written with the first commit)."""
    prefix = ledger_prefix(generation)
    return bool(store.list(f"{prefix}/units") or store.list(f"{prefix}/snapshots"))


def load_committed_state(store: OutputStore) -> IndexState | None:
    """``load_state``, but an identity whose index never committed a unit (a run that died before
    its first commit) is no index: it blocks no model choice."""
    state = load_state(store)
    if (state is not None and state.active is not None and state.pending is None
            and not has_commits(store, state.active.generation)
            and not store.list(PAGES_PREFIX)):
        return None
    return state


def save_state(store: OutputStore, state: IndexState) -> None:
    store.write_bytes(INDEX_KEY, json.dumps(state.to_json(), indent=1, sort_keys=True).encode())


def infer_from_shards(store: OutputStore) -> IndexIdentity | None:
    """An OUT written before ``_index.json`` existed: its identity is in the shards' metadata."""
    import pyarrow.parquet as pq

    from operators.stores.run_metadata import RunMetadata

    shards = [o.key for o in store.list(PAGES_PREFIX) if o.key.endswith(".parquet")]
    if not shards:
        return None
    schema = pq.read_schema(io.BytesIO(store.read_bytes(shards[0])))
    meta = RunMetadata.from_schema(schema)
    from operators.models import ModelSpec, adapter_for, decide_budget

    name = meta.model or "colqwen2-tiny"
    weights = meta.weights or "random"
    try:
        budget = adapter_for(decide_budget(ModelSpec(name=name, weights=weights))).pixel_budget()
        max_pixels, multiple = budget.max_pixels, budget.multiple
    except Exception:  # a checkpoint that is not here any more: its budget is unknown
        max_pixels, multiple = 0, 1
    text = meta.text_model
    sv = meta.sv_model
    return IndexIdentity(
        model=ModelIdentity(name, weights, meta.dim or 128, None, max_pixels, multiple),
        layouts=meta.layouts,
        text_model={"name": text, "dim": schema.field("sv_text").type.list_size} if text else None,
        sv_model={"name": sv, "dim": schema.field("sv_vlm").type.list_size} if sv else None)


def active_generation(store: OutputStore) -> int:
    state = load_state(store) if store.exists(INDEX_KEY) else None
    return state.active.generation if state and state.active else 1


def index_base(store: OutputStore, collection: str | None) -> str:
    """The real tables' prefix for ``--collection`` (default: the index's own): the active
    generation's, whose names the index's are aliases of after a reindex."""
    state = load_state(store) if store.exists(INDEX_KEY) else None
    active = state.active if state else None
    if active is None:
        return collection or "pagemill"
    if collection is None or collection == active.collection:
        return active.base
    return collection
