"""What an index is made of, recorded in ``OUT/_index.json`` and checked by every command.

The identity of an index: the model (name, weights, dim, the checkpoint's revision or checksum),
the pixel budget pages are rendered at, the layouts and their parameters, the text and
single-vector models, and where its Milvus collections are. ``_index.json`` holds the *active*
identity (what readers read) and, during a ``--reindex``, the *pending* one being built beside it
(a new generation: its own ledger, its own collections), swapped in when every document has been
embedded again; the retired generation is cleaned up after the swap.

>>> ModelIdentity("colqwen2-tiny", "random", 128, None, 75264, 28).describe()
'colqwen2-tiny (random weights, 128-d, 75,264 px)'
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field

from operators.errors import UsageError
from operators.io.store import OutputStore

INDEX_KEY = "_index.json"
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
    milvus_base: str = "pagemill"  # the real collections' prefix: <collection>, then <collection>_g<N>
    building: list[str] = field(default_factory=list)  # layouts (or text/sv) added, not yet on every document

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> IndexIdentity:
        d = dict(d)
        d["model"] = ModelIdentity(**d["model"])
        return cls(**d)

    def describe(self) -> str:
        extra = "".join(f", {k} {v['name']}" for k, v in (("text", self.text_model), ("sv", self.sv_model)) if v)
        return f"{self.model.describe()}{extra}"


@dataclass
class IndexState:
    active: IndexIdentity | None = None
    pending: IndexIdentity | None = None  # a --reindex in progress
    retired: IndexIdentity | None = None  # swapped out, its files and collections not yet removed
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"format": FORMAT, "active": self.active.to_json() if self.active else None,
                "pending": self.pending.to_json() if self.pending else None,
                "retired": self.retired.to_json() if self.retired else None, "history": self.history,
                "updated_at": time.time()}

    @classmethod
    def from_json(cls, d: dict) -> IndexState:
        load = IndexIdentity.from_json
        return cls(active=load(d["active"]) if d.get("active") else None,
                   pending=load(d["pending"]) if d.get("pending") else None,
                   retired=load(d["retired"]) if d.get("retired") else None, history=d.get("history", []))


def load_state(store: OutputStore) -> IndexState | None:
    """``_index.json``, or the identity an OUT of an earlier pagemill implies (its shards' metadata),
    or None for an OUT that holds no index yet."""
    if store.exists(INDEX_KEY):
        return IndexState.from_json(json.loads(store.read_bytes(INDEX_KEY)))
    inferred = infer_from_shards(store)
    return IndexState(active=inferred) if inferred else None


def save_state(store: OutputStore, state: IndexState) -> None:
    store.write_bytes(INDEX_KEY, json.dumps(state.to_json(), indent=1, sort_keys=True).encode())


def infer_from_shards(store: OutputStore) -> IndexIdentity | None:
    """An OUT written before ``_index.json`` existed: its identity is in the shards' metadata."""
    import pyarrow.parquet as pq

    from operators.sinks.run_metadata import RunMetadata

    shards = [o.key for o in store.list("pages") if o.key.endswith(".parquet")]
    if not shards:
        return None
    schema = pq.read_schema(io.BytesIO(store.read_bytes(shards[0])))
    meta = RunMetadata.from_schema(schema)
    from operators.models import ModelSpec, adapter_for

    name = meta.model or "colqwen2-tiny"
    weights = meta.weights or "random"
    try:
        budget = adapter_for(ModelSpec(name=name, weights=weights)).pixel_budget()
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


def checkpoint_id(spec) -> str | None:
    """The revision of a hub checkpoint (its cache snapshot), or a checksum of a local folder's
    config and weight files (names and sizes); None for random weights and simulations."""
    from operators.models import PRESETS, WEIGHTS_HUB

    if spec.weights != WEIGHTS_HUB or spec.name.startswith("sim:"):
        return None
    name = PRESETS[spec.name]["hub_id"] if spec.name in PRESETS else spec.name
    if os.path.isdir(name):
        h = hashlib.blake2b(digest_size=8)
        with open(os.path.join(name, "config.json"), "rb") as f:
            h.update(f.read())
        for entry in sorted(os.listdir(name)):
            if entry.endswith((".safetensors", ".bin")):
                h.update(f"{entry}:{os.path.getsize(os.path.join(name, entry))}".encode())
        return "sha:" + h.hexdigest()
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return "rev:" + os.path.basename(os.path.dirname(cached))
    except Exception:
        pass
    return None


def collection_base(collection: str, generation: int) -> str:
    return collection if generation <= 1 else f"{collection}_g{generation}"


def refuse_change(active: IndexIdentity, asked: IndexIdentity, what: str, out: str) -> UsageError:
    return UsageError(
        f"{out} holds an index of {active.describe()}; this run asks for {asked.describe()} ({what}): use a new "
        f"--out, or --reindex to embed every document again with the new model (search keeps using the current "
        f"index until the new one is complete)")


def _names(model: dict | None) -> str | None:
    return model["name"] if model else None


def _same_models(a: IndexIdentity, b: IndexIdentity) -> bool:
    return (a.model.same_embedding(b.model) and _names(a.text_model) == _names(b.text_model)
            and _names(a.sv_model) == _names(b.sv_model))


@dataclass
class Decision:
    """What a run does to the index: ``mode`` ingest or reindex, the ``target`` identity it
    builds, the layouts and models ``added`` to it or ``dropped`` from it, the updated ``state``
    (to be saved), and ``notes`` for the user."""

    mode: str
    target: IndexIdentity
    state: IndexState
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def decide(state: IndexState, asked: IndexIdentity, reindex: bool, drop_layouts: list[str], out: str) -> Decision:
    """Compare what a run asks for with what the index holds: a new index records itself; a
    changed model is refused (or, with ``reindex``, becomes a new generation built beside the
    active one); added layouts and models are built for the documents that lack them."""
    active = state.active
    if active is None:
        state.active = asked
        return Decision("ingest", asked, state)
    if reindex:
        return _decide_reindex(state, asked, out)
    if not active.model.same_embedding(asked.model):
        raise refuse_change(active, asked, "another model or pixel budget", out)
    d = Decision("ingest", active, state)
    for part in ("text_model", "sv_model"):
        have, want = getattr(active, part), getattr(asked, part)
        if have and want and have["name"] != want["name"]:
            raise refuse_change(active, asked, f"another {part.replace('_', ' ')}", out)
        if want and not have:
            setattr(active, part, want)
            d.added.append("text" if part == "text_model" else "sv-vlm")
    new = [name for name in asked.layouts if name not in active.layouts]
    d.dropped = [name for name in drop_layouts if name in active.layouts]
    for name in drop_layouts:
        if name not in active.layouts and name not in ("text", "sv-vlm"):
            raise UsageError(f"--drop-layouts {name}: not a layout of the index (it has: {', '.join(active.layouts)})")
        if name in ("mv", "sv-mean"):
            raise UsageError(f"--drop-layouts {name}: every index keeps mv (the archive) and sv-mean")
    active.layouts = {**{k: v for k, v in active.layouts.items() if k not in d.dropped},
                      **{k: asked.layouts[k] for k in new}}
    d.added += new
    active.building = sorted(set(active.building) | set(d.added))
    if state.pending is not None:
        d.notes.append(f"note: a reindex to {state.pending.describe()} is in progress; this run updates the active "
                       f"index (run with --reindex to continue the reindex)")
    if d.added:
        d.notes.append(f"index: {', '.join(d.added)} added: new documents get them as they are embedded, the "
                       f"others from the archive (no model run for layouts)")
    return d


def _decide_reindex(state: IndexState, asked: IndexIdentity, out: str) -> Decision:
    """A reindex builds a new generation beside the active index, or continues the one pending."""
    active, pending = state.active, state.pending
    notes = []
    if pending is not None and not _same_models(pending, asked):
        raise UsageError(f"a reindex to {pending.describe()} is in progress in {out}; this run asks for "
                         f"{asked.describe()}: finish that one first (run it again with --reindex and its "
                         f"model), or use a new --out")
    if pending is None:
        if _same_models(active, asked):
            raise UsageError(f"--reindex: {out} already holds {active.describe()}: there is nothing to embed "
                             f"again (drop --reindex)")
        gen = active.generation + 1
        asked.layouts = {**active.layouts, **asked.layouts}
        asked.generation, asked.milvus_base = gen, collection_base(asked.collection, gen)
        state.pending = asked
        notes.append(f"reindex: generation {gen} ({asked.describe()}) is built beside the active index "
                     f"({active.describe()}), which search keeps using until every document is in the new one")
    return Decision("reindex", state.pending, state, notes=notes)


def active_generation(store: OutputStore) -> int:
    state = load_state(store) if store.exists(INDEX_KEY) else None
    return state.active.generation if state and state.active else 1


def live_page_files(store: OutputStore) -> list[str]:
    """The committed page shards of the active index: the manifest (written at every commit), or
    the active generation's ledger where an earlier pagemill wrote no manifest."""
    from pipelines.ingest.commit import MANIFEST_KEY
    from pipelines.ingest.ledger import Ledger

    if store.exists(MANIFEST_KEY):
        return list(json.loads(store.read_bytes(MANIFEST_KEY))["files"])
    ledger = Ledger(store, active_generation(store))
    ledger.load()
    files = sorted(k for k in ledger.state.files if k.startswith("pages/"))
    return files or sorted(o.key for o in store.list("pages") if o.key.endswith(".parquet"))


def milvus_base(store: OutputStore, collection: str | None) -> str:
    """The real collections' prefix for ``--collection`` (default: the index's own)."""
    state = load_state(store) if store.exists(INDEX_KEY) else None
    active = state.active if state else None
    if active is None:
        return collection or "pagemill"
    if collection is None or collection == active.collection:
        return active.milvus_base
    return collection
