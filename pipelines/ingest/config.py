"""Job configuration: one flat, validated, immutable record. Unknown keys are rejected by name.

A config file (YAML or JSON) holds the same keys as the command-line flags (dashes or
underscores); flags given on the command line win over the file. The vector store's options
(pipelines/options.py, group ``store``) are kept together in ``store``: the job hands them to
the store (operators/stores), which alone reads them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipelines.out.lock import DEFAULT_LEASE_S


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def _commas(value) -> list[str]:
    if isinstance(value, str):
        return [x.strip() for x in value.split(",") if x.strip()]
    return list(value or [])


@dataclass(frozen=True)
class IngestConfig:
    source: str = ""
    out: str = ""
    store: dict = field(default_factory=dict)  # the vector store's options (pipelines/options.py STORE_OPTIONS)
    corpus: str = "default"  # the corpus (tenant) of this run's pages; filter with search --corpus
    collection: str | None = None  # default: the index's (OUT/_index.json), else pagemill
    model: str | None = None  # default: the index's model (and text:/sv: models), else colqwen2-tiny
    weights: str | None = None  # default: the index's (with its model), else random
    reindex: bool = False  # embed every document again with a new model, in a new generation swapped in at the end
    drop_layouts: list[str] = field(default_factory=list)  # layouts to drop from the store (the index keeps others)
    relayout_only: bool = False  # `pagemill relayout`: no source, only the added layouts from the archive
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str = "auto"  # auto | sdpa | eager | flash_attention_2 (auto: flash-attn on CUDA if installed)
    trust_remote_code: bool = False  # run code shipped with a checkpoint (explicit opt-in only)
    max_pixels: int | None = None
    executor: str = "ray"
    ray_address: str | None = None
    num_gpus: float | None = None  # per embedding actor; default 1 when the cluster has GPUs, else 0
    embed_actors: int | None = None  # default: one per GPU, or 1 on a CPU-only cluster
    render_actors: int | None = None  # default: the CPUs left after the embedding actors
    object_store_mb: float | None = None  # Ray object store budget for pages in flight (default 128 MB per actor, >= 256)
    encode_actors: int | None = None  # pooling/encoding actors (default: one per accelerator)
    write_actors: int | None = None  # writer actors (default: one per two accelerators)
    write_placement: str = "auto"  # auto | workers | driver: where Parquet and vector-store writes happen
    write_batch_pages: int = 64  # pages per writer call (a Parquet part holds at most this many)
    batch_size: int = 8  # pages per forward pass
    max_batch_tokens: int | None = None  # visual tokens per forward pass (default: batch_size full-budget pages)
    page_timeout_s: float = 60.0
    max_doc_bytes: int = 512 * 1024 * 1024
    max_pages: int = 100_000
    delete_missing: bool = False  # remove documents gone from the source (shards and the store)
    ledger_compact_every: int = 256  # fold the ledger's unit records into a snapshot past this many
    retry_quarantined: bool = False  # process only documents whose committed version was quarantined
    passwords: str | None = None  # file of "<glob>\t<password>" lines for encrypted documents
    unit_max_docs: int = 32
    unit_max_bytes: int = 256 * 1024 * 1024
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    summary: str | None = None
    progress_interval_s: float = 10.0
    lock_lease_s: float = DEFAULT_LEASE_S  # a dead run's lock on OUT expires after this (renewed every lease/4)
    pushgateway: str | None = None  # push the run's metrics here (pipelines/ingest/metrics.py)
    metrics_textfile: str | None = None  # write them here (a .prom file) for node exporter
    # S3 and S3-compatible stores (credentials: boto3's standard chain, never here)
    s3_endpoint_url: str | None = None  # default $AWS_ENDPOINT_URL
    s3_region: str | None = None
    s3_addressing_style: str = "auto"
    s3_retry_mode: str = "standard"
    s3_max_attempts: int = 8
    # Storage layouts (operators/layouts/layout.py); mv and sv-mean are always written
    layouts: list[str] = field(default_factory=list)
    fde_reps: int = 10
    fde_bits: int = 4
    fde_proj_dim: int = 16
    fde_seed: int = 42
    extract_text: bool = True
    ocr: str = "auto"  # auto | always | never (operators/ocr.py)
    ocr_languages: str = "eng"
    ocr_dpi: int = 300
    page_images: str | None = None  # FORMAT:LONGEST_EDGE (webp:1024); none: stop (the index records it)
    dedup: str = "none"  # none | pages (near-duplicate pages embedded once per batch)
    office_timeout_s: float = 120.0
    fidelity_queries: int = 0  # > 0: after the run, measure each layout's fidelity with this many queries
    fidelity_seed: int = 0

    def validate(self) -> IngestConfig:
        """The checked configuration (lists given as comma-separated text split, the store's
        options completed with their defaults); raises ConfigError naming the key."""
        from pipelines.options import store_options

        cfg = dataclasses.replace(self, layouts=_commas(self.layouts), drop_layouts=_commas(self.drop_layouts),
                                  store=store_options(dict(self.store)))
        if not cfg.source and not cfg.relayout_only:
            raise ConfigError("source: required (a folder or file:// URI of PDFs)")
        if not cfg.out:
            raise ConfigError("out: required (the output root)")
        from pipelines.options import config_problem

        problem = config_problem(cfg)  # the choices and bounds declared with the options
        if problem:
            raise ConfigError(problem)
        if cfg.fde_bits > 10:
            raise ConfigError(f"fde_bits: {cfg.fde_bits} would make 2^{cfg.fde_bits} buckets per repetition (max 10)")
        from operators.layouts.layout import LayoutError, parse_layouts

        try:
            parse_layouts(cfg.layouts)
        except LayoutError as e:
            raise ConfigError(f"layouts: {e}") from None
        if cfg.model is not None:
            check_model(cfg.model, cfg.weights, cfg.extract_text)
        if cfg.fidelity_queries and not cfg.extract_text:
            raise ConfigError("fidelity_queries: needs extract_text (queries are sentences of the text layer)")
        if cfg.collection is not None and (not cfg.collection.replace("_", "").isalnum() or cfg.collection[0].isdigit()):
            raise ConfigError(f"collection: {cfg.collection!r} must be letters, digits and _ (not starting with a digit)")
        if not cfg.corpus or len(cfg.corpus) > 128:
            raise ConfigError(f"corpus: must be 1 to 128 characters, got {cfg.corpus!r}")
        from operators.ocr import LANGUAGES
        from operators.render import parse_page_images

        if not LANGUAGES.match(cfg.ocr_languages or ""):
            raise ConfigError(f"ocr_languages: {cfg.ocr_languages!r} is Tesseract's language codes joined by + "
                              f"(e.g. eng+deu)")
        try:
            parse_page_images(cfg.page_images)
        except ValueError as e:
            raise ConfigError(f"page_images: {e}") from None
        from pipelines.ingest.metrics import metrics_problem

        problem = metrics_problem(cfg.pushgateway, cfg.metrics_textfile)
        if problem:
            raise ConfigError(problem)
        if cfg.passwords and not Path(cfg.passwords).is_file():
            raise ConfigError(f"passwords: no such file {cfg.passwords!r}")
        from operators.stores import check_store_options, store_of_uri
        from pipelines.options import foreign_store_option

        problem = check_store_options(cfg.store, cfg.out)
        if problem is None:
            problem = foreign_store_option(cfg.store, store_of_uri(cfg.store, cfg.out))
        if problem:
            raise ConfigError(problem)
        return cfg

    def s3_options(self):
        from operators.io.s3 import S3Options

        return S3Options(endpoint_url=self.s3_endpoint_url, region=self.s3_region,
                         addressing_style=self.s3_addressing_style, retry_mode=self.s3_retry_mode,
                         max_attempts=self.s3_max_attempts)

    def fde_params(self):
        from operators.layouts.fde import FdeParams

        return FdeParams(self.fde_reps, self.fde_bits, self.fde_proj_dim, self.fde_seed)


def check_model(model: str, weights: str | None, extract_text: bool = True) -> None:
    """The checks of a ``--model`` string that need no index (the job checks it again once the
    index's model has filled an unspecified --model)."""
    from operators.models import ModelError, ModelSpec, split_model_specs, sv_model_spec
    from operators.models.sv import sv_embedder_for

    try:
        _, text_model = split_model_specs(model)
    except ModelError as e:
        raise ConfigError(f"model: {e}") from None
    if text_model and not extract_text:
        raise ConfigError("model: text:<model> needs the text layer; drop --no-text")
    sv = sv_model_spec(model)
    if sv:
        try:
            sv_embedder_for(sv, ModelSpec(weights=weights or "random")).dim  # noqa: B018  (checks its @DIM)
        except ModelError as e:
            raise ConfigError(f"model: {e}") from None


def _coerce(key: str, t: str, value):
    """Check a value from a file against its declared type (``t``: as annotated)."""
    if value is None:
        if "None" in t:
            return None
        raise ConfigError(f"{key}: must not be null")
    try:
        if t.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if t.startswith("list"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TypeError
            return value
        if t.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return value
        if t.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError
            return float(value)
        if t.startswith("str"):
            if not isinstance(value, str):
                raise TypeError
            return value
    except TypeError:
        raise ConfigError(f"{key}: expected {t}, got {type(value).__name__} {value!r}") from None
    return value


FIELDS = {f.name: f for f in dataclasses.fields(IngestConfig) if f.name != "store"}


def config_keys() -> dict[str, str]:
    """Every key a config file may hold, with its type: the job's fields and the store's options."""
    from pipelines.options import STORE_OPTIONS

    keys = {name: str(f.type) for name, f in FIELDS.items()}
    kinds = {"str": "str | None", "int": "int", "float": "float", "list": "list[str]", "flag": "bool"}
    keys.update({o.dest: kinds[o.kind] for o in STORE_OPTIONS})
    return keys


def load_config_file(path: str) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {path}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys to values")
    keys = config_keys()
    out = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in keys:
            raise ConfigError(f"unknown config key {raw_key!r} in {path} (known: {', '.join(sorted(keys))})")
        out[key] = _coerce(key, keys[key], value)
    return out


def build_config(file_values: dict, overrides: dict) -> IngestConfig:
    """File values, then command-line overrides (None means 'not given'); the store's options
    go to ``store``."""
    from pipelines.options import STORE_OPTIONS

    values = dict(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    store = {o.dest: values.pop(o.dest) for o in STORE_OPTIONS if o.dest in values}
    return IngestConfig(**values, store=store).validate()
