"""A run resolved once: the options, the index's identity and the checkpoint's processor become one
immutable value before any work.

``resolve_run`` fills what the user left out from the index (a nightly job needs no ``--model``),
decides the pixel budget (``operators.models.decide_budget``, the one place), asks the index what
the run does to it (``pipelines.ingest.decision.decide``) and returns the ``ResolvedRun``: the
models and their budget, every layout (the text layer and ``sv-vlm`` included), the FDE
parameters, the store's index shape, the generation and its tables. Nothing assigns to the
configuration after that: every stage, the identity record and the summary take their facts
from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from operators.errors import UsageError
from operators.layouts.fde import FdeParams
from operators.layouts.layout import Layout, of_sv_model, parse_layouts
from operators.models import ModelSpec, adapter_for, decide_budget, split_model_specs, sv_model_spec
from operators.models.family import budget_side, family
from operators.models.spec import checkpoint_id
from operators.ocr import OcrEngine, OcrMissing
from operators.ocr import resolve as resolve_ocr
from operators.render import PixelBudget
from operators.stores import check_recorded, given_uri, record, vectors_uri
from operators.stores.door import IndexShape
from pipelines.ingest.config import ConfigError, IngestConfig, check_model
from pipelines.ingest.decision import Decision, decide
from pipelines.out.identity import IndexIdentity, IndexState, ModelIdentity
from pipelines.out.keys import new_run_id

DEFAULT_MODEL = "colqwen2-tiny"
BASE_LAYOUTS = ("mv", "sv-mean")  # every index has them (the archive and the page collection's key)


@dataclass(frozen=True)
class RunModels:
    """The run's models: the multi-vector model (its spec with the budget decided), the text
    layer's and the single-vector model's (names and dimensions)."""

    spec: ModelSpec
    budget: PixelBudget
    dim: int
    text: str | None = None
    text_dim: int | None = None
    sv: str | None = None
    sv_dim: int | None = None

    @property
    def simulated(self) -> bool:
        return self.spec.name.startswith("sim:")

    def describe(self) -> str:
        """The models, in words: ``colqwen2-tiny (random weights) + text all-MiniLM-L6-v2``."""
        extra = "".join(f" + {what} {name}" for what, name in (("text", self.text), ("sv", self.sv)) if name)
        return f"{self.spec.name} ({self.spec.weights} weights){extra}"

    def vectors_per_page(self) -> float:
        """Image-patch vectors of a page at the full budget (a square page)."""
        return float(family(self.spec).visual_tokens(self.spec, *budget_side(self.budget.max_pixels)))


@dataclass(frozen=True)
class ResolvedRun:
    run_id: str
    options: IngestConfig  # what the user asked, validated (executor, limits, unit sizes, stores)
    mode: str  # ingest | reindex
    models: RunModels
    layouts: tuple[Layout, ...]  # every layout of the index (mv and sv-mean first)
    fde: FdeParams
    generation: int
    collection: str  # the name the user knows the index by
    base: str  # this generation's tables' prefix in the store
    index: str  # what the index is, in words
    vectors: str | None = None  # the vector store's URI (operators.stores)
    added: tuple[str, ...] = ()  # layouts (or text, sv-vlm) the run adds to an index
    dropped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    writes_active: bool = True  # the run commits to the index readers read (not a reindex's generation)
    ocr: OcrEngine = OcrEngine("never")  # --ocr on this machine: Tesseract's data, or why it is off

    @property
    def shape(self) -> IndexShape:
        """What the vector store holds for this index."""
        m = self.models
        return IndexShape(base=self.base, dim=m.dim, layouts=self.layouts, fde_dim=self.fde.dim, text_dim=m.text_dim,
                          page_vectors=(("sv-vlm", m.sv_dim),) if m.sv_dim else (), corpus=self.options.corpus)

    def layout_params(self) -> dict[str, dict]:
        return {lay.name: lay.params(self.fde) for lay in self.layouts}

    def shard_metadata(self) -> dict:
        """The ``pagemill.*`` facts every shard of the run records (operators/stores/run_metadata.py)."""
        m = self.models
        return {"model": m.spec.name, "weights": m.spec.weights, "dim": m.dim, "corpus": self.options.corpus,
                "text_model": m.text, "sv_model": m.sv, "layouts": self.layout_params()}


def _filled(cfg: IngestConfig, state: IndexState | None) -> IngestConfig:
    """Options the user left out, from the index (its model, weights and budget; its tables' name)."""
    active = state.active if state else None
    target = state.pending if (state and state.pending and cfg.reindex and cfg.model is None) else active
    values: dict = {}
    if cfg.model is None:
        if target is not None:
            parts = [target.model.name] + [f"{p}{m['name']}" for p, m in (("text:", target.text_model),
                                                                            ("sv:", target.sv_model)) if m]
            values.update(model=",".join(parts), weights=cfg.weights or target.model.weights,
                          max_pixels=cfg.max_pixels or (target.model.max_pixels or None))
        else:
            values["model"] = DEFAULT_MODEL
    values["weights"] = values.get("weights") or cfg.weights or "random"
    values["collection"] = cfg.collection or (active.collection if active else "pagemill")
    if cfg.page_images is None and state is not None and state.pages.get("page_images"):
        values["page_images"] = state.pages["page_images"]  # a nightly run keeps what the index keeps
    recorded = state.store if state else None
    if not given_uri(cfg.store) and recorded and recorded.get("uri"):
        values["store"] = {**cfg.store, "vectors": recorded["uri"]}
    return dataclasses.replace(cfg, **values)


def requested_identity(cfg: IngestConfig, spec: ModelSpec) -> IndexIdentity:
    """What this run asks the index to be (``spec``: its budget decided)."""
    from operators.models.sv import sv_embedder_for
    from operators.models.text import text_embedder

    adapter = adapter_for(spec)  # cheap: reads the preset, loads nothing
    budget = adapter.pixel_budget()
    _, text = split_model_specs(cfg.model)
    sv = sv_model_spec(cfg.model)
    fde = cfg.fde_params()
    return IndexIdentity(
        model=ModelIdentity(spec.name, spec.weights, adapter.dim, checkpoint_id(spec), budget.max_pixels,
                            budget.multiple),
        layouts={lay.name: lay.params(fde) for lay in parse_layouts(cfg.layouts)},
        text_model={"name": text, "dim": text_embedder(text).dim} if text else None,
        sv_model={"name": sv, "dim": sv_embedder_for(sv, spec).dim} if sv else None,
        collection=cfg.collection, base=cfg.collection)


def resolve_run(cfg: IngestConfig, state: IndexState | None, out: str, run_id: str | None = None
                ) -> tuple[ResolvedRun, Decision]:
    """The run, resolved from the options and what the index holds; and the decision, whose
    ``state`` is what ``_index.json`` becomes (the job saves it)."""
    cfg = _filled(cfg, state)
    check_model(cfg.model, cfg.weights, cfg.extract_text)
    vectors = vectors_uri(cfg.store, cfg.out)
    problem = check_recorded(vectors, state.store if state else None, out) if vectors else None
    if problem:
        raise UsageError(problem)
    visual, _ = split_model_specs(cfg.model)
    spec = decide_budget(ModelSpec(name=visual, weights=cfg.weights, device=cfg.device, dtype=cfg.dtype,
                                   attn_implementation=cfg.attn_implementation, max_pixels=cfg.max_pixels,
                                   trust_remote_code=cfg.trust_remote_code))
    decision = decide(state or IndexState(), requested_identity(cfg, spec), reindex=cfg.reindex,
                      drop_layouts=cfg.drop_layouts, out=out)
    target = decision.target
    names = [name for name in target.layouts if name not in BASE_LAYOUTS]
    fde_params = next((p for p in target.layouts.values() if "fde_reps" in p), None)  # sv-fde, sv-fde-int8, ...
    fde = (FdeParams(fde_params["fde_reps"], fde_params["fde_bits"], fde_params["fde_proj_dim"], fde_params["fde_seed"])
           if fde_params else cfg.fde_params())
    adapter = adapter_for(spec)
    text, sv = target.text_model, target.sv_model
    models = RunModels(spec=spec, budget=adapter.pixel_budget(), dim=adapter.dim,
                       text=text["name"] if text else None, text_dim=text["dim"] if text else None,
                       sv=sv["name"] if sv else None, sv_dim=sv["dim"] if sv else None)
    vlm = [n for n in names if of_sv_model(n)]
    if vlm and not models.sv_dim:
        raise ConfigError(f"layouts: {', '.join(vlm)} encode the single-vector model's page vector, and this index has "
                          f"none: add ,sv:MODEL to --model (e.g. colqwen2,sv:qwen3-vl-embedding-2b)")
    try:
        ocr = resolve_ocr(cfg.ocr if cfg.extract_text and not cfg.relayout_only else "never", cfg.ocr_languages)
    except OcrMissing as e:
        raise UsageError(str(e)) from None
    if cfg.page_images:
        decision.state.pages = {**decision.state.pages, "page_images": cfg.page_images}
    decision.state.store = {**(decision.state.store or {}), **record(vectors, cfg.out)} if vectors else None
    run = ResolvedRun(run_id=run_id or new_run_id(), options=cfg, mode=decision.mode, models=models, vectors=vectors,
                      layouts=tuple(parse_layouts(names)), fde=fde, generation=target.generation,
                      collection=target.collection, base=target.base, index=target.describe(),
                      added=tuple(decision.added), dropped=tuple(decision.dropped), notes=tuple(decision.notes),
                      writes_active=target is decision.state.active, ocr=ocr)
    return run, decision
