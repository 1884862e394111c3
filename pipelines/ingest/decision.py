"""What a run does to the index (``decide``): a new index records itself; a changed model is
refused, or with ``--reindex`` becomes a new generation built beside the active one; added
layouts and models are built for the documents that lack them; dropped ones go."""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.errors import UsageError
from pipelines.out.identity import IndexIdentity, IndexState


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
        asked.generation, asked.base = gen, collection_base(asked.collection, gen)
        state.pending = asked
        notes.append(f"reindex: generation {gen} ({asked.describe()}) is built beside the active index "
                     f"({active.describe()}), which search keeps using until every document is in the new one")
    return Decision("reindex", state.pending, state, notes=notes)
