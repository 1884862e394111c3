"""Job configuration: one flat, validated record. Unknown keys are rejected by name.

A config file (YAML or JSON) holds the same keys as the command-line flags (dashes or
underscores); flags given on the command line win over the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


@dataclass
class IngestConfig:
    source: str = ""
    out: str = ""
    milvus: str | None = None  # default: OUT/milvus.db (Milvus Lite)
    milvus_token_env: str = "MILVUS_TOKEN"  # the token is read from this variable, never from a file
    milvus_timeout_s: float = 60.0  # per Milvus call; a server gone past it fails the run (nothing half-committed)
    milvus_retries: int = 3  # extra attempts for transient Milvus failures (idempotent writes), with backoff
    milvus_user: str | None = None
    milvus_password_env: str = "MILVUS_PASSWORD"  # the password is read from this variable
    milvus_db: str | None = None
    milvus_ca_file: str | None = None  # TLS: PEM of the CA or of the self-signed server certificate
    milvus_server_name: str | None = None  # TLS: expected server name, when not the URI's host
    milvus_index: list[str] = field(default_factory=list)  # LAYOUT=TYPE[:k=v,...], e.g. sv-mean=HNSW:M=16
    milvus_mv_mode: str = "auto"  # auto | rows | struct (array of structs, Milvus >= 2.6.4)
    milvus_layouts: list[str] = field(default_factory=list)  # layouts to write to Milvus (default: all of the run's)
    milvus_bulk_dir: str | None = None  # a first load: writers stage Parquet import files here, Milvus imports them at the end
    milvus_partition_key: bool = False  # add a `corpus` partition key field to every collection
    corpus: str = "default"  # the value of the corpus field (with milvus_partition_key); filter with search --corpus
    collection: str | None = None  # default: the index's (OUT/_index.json), else pagemill
    model: str | None = None  # default: the index's model (and text:/sv: models), else colqwen2-tiny
    weights: str | None = None  # default: the index's (with its model), else random
    reindex: bool = False  # embed every document again with a new model, in a new generation swapped in at the end
    drop_layouts: list[str] = field(default_factory=list)  # layouts to drop from Milvus (the index keeps others)
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
    write_placement: str = "auto"  # auto | workers | driver: where Parquet and Milvus writes happen
    write_batch_pages: int = 64  # pages per writer call (a Parquet part holds at most this many)
    batch_size: int = 8  # pages per forward pass
    max_batch_tokens: int | None = None  # visual tokens per forward pass (default: batch_size full-budget pages)
    page_timeout_s: float = 60.0
    max_doc_bytes: int = 512 * 1024 * 1024
    max_pages: int = 100_000
    delete_missing: bool = False  # remove documents gone from the source (shards and Milvus)
    ledger_compact_every: int = 256  # fold the ledger's unit records into a snapshot past this many
    retry_quarantined: bool = False  # process only documents whose committed version was quarantined
    passwords: str | None = None  # file of "<glob>\t<password>" lines for encrypted documents
    unit_max_docs: int = 32
    unit_max_bytes: int = 256 * 1024 * 1024
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    summary: str | None = None
    progress_interval_s: float = 10.0
    lock_lease_s: float = 300.0  # a dead run's lock on OUT expires after this
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
    fidelity_queries: int = 0  # > 0: after the run, measure each layout's fidelity with this many queries
    fidelity_seed: int = 0

    def validate(self) -> IngestConfig:
        if not self.source and not self.relayout_only:
            raise ConfigError("source: required (a folder or file:// URI of PDFs)")
        if not self.out:
            raise ConfigError("out: required (the output root)")
        from pipelines.options import config_problem

        problem = config_problem(self)  # the choices and bounds declared with the options
        if problem:
            raise ConfigError(problem)
        if self.fde_bits > 10:
            raise ConfigError(f"fde_bits: {self.fde_bits} would make 2^{self.fde_bits} buckets per repetition (max 10)")
        from operators.layouts.layout import LayoutError, parse_layouts

        for key in ("layouts", "drop_layouts", "milvus_layouts"):
            if isinstance(getattr(self, key), str):
                setattr(self, key, [x.strip() for x in getattr(self, key).split(",") if x.strip()])
        try:
            parse_layouts(self.layouts)
        except LayoutError as e:
            raise ConfigError(f"layouts: {e}") from None
        if self.model is not None:
            self.validate_model()
        if self.fidelity_queries and not self.extract_text:
            raise ConfigError("fidelity_queries: needs extract_text (queries are sentences of the text layer)")
        if self.collection is not None and (not self.collection.replace("_", "").isalnum() or self.collection[0].isdigit()):
            raise ConfigError(f"collection: {self.collection!r} must be letters, digits and _ (not starting with a digit)")
        if self.milvus_ca_file and not os.path.isfile(self.milvus_ca_file):
            raise ConfigError(f"milvus_ca_file: no such file {self.milvus_ca_file!r}")
        if not self.corpus or len(self.corpus) > 128:
            raise ConfigError(f"corpus: must be 1 to 128 characters, got {self.corpus!r}")
        if isinstance(self.milvus_index, str):
            self.milvus_index = [self.milvus_index]
        from operators.sinks.milvus_schema import MilvusError, parse_index_specs

        try:
            parse_index_specs(self.milvus_index)
        except MilvusError as e:
            raise ConfigError(str(e)) from None
        if self.passwords and not os.path.isfile(self.passwords):
            raise ConfigError(f"passwords: no such file {self.passwords!r}")
        if self.milvus_uri() is None:
            raise ConfigError("milvus: required when out is an object store (Milvus Lite needs a local file): "
                              "pass --milvus PATH.db or a server URI")
        return self

    def validate_model(self) -> IngestConfig:
        """The checks that need the model spec (the job calls it again once the index's model
        has filled an unspecified --model)."""
        from operators.layouts.layout import parse_layouts
        from operators.models import ModelError, ModelSpec, split_model_specs, sv_model_spec
        from operators.models.sv import sv_embedder_for

        try:
            _, text_model = split_model_specs(self.model)
        except ModelError as e:
            raise ConfigError(f"model: {e}") from None
        if text_model and not self.extract_text:
            raise ConfigError("model: text:<model> needs the text layer; drop --no-text")
        sv = sv_model_spec(self.model)
        if sv:
            try:
                sv_embedder_for(sv, ModelSpec(weights=self.weights or "random")).dim  # noqa: B018  (checks its @DIM)
            except ModelError as e:
                raise ConfigError(f"model: {e}") from None
        run_layouts = ([lay.name for lay in parse_layouts(self.layouts)] + (["sv-vlm"] if sv else [])
                       + (["text"] if text_model else []))
        for name in self.milvus_layouts:
            if name not in run_layouts:
                raise ConfigError(f"milvus_layouts: {name!r} is not a layout of this run (its layouts: {', '.join(run_layouts)})")
        return self

    def s3_options(self):
        from operators.io.s3 import S3Options

        return S3Options(endpoint_url=self.s3_endpoint_url, region=self.s3_region,
                         addressing_style=self.s3_addressing_style, retry_mode=self.s3_retry_mode,
                         max_attempts=self.s3_max_attempts)

    def fde_params(self):
        from operators.layouts.fde import FdeParams

        return FdeParams(self.fde_reps, self.fde_bits, self.fde_proj_dim, self.fde_seed)

    def milvus_connection(self):
        """Connection options; the token and password come from the environment of the process
        that connects (never from a file, never pickled into a worker)."""
        from operators.sinks.milvus_client import MilvusConnection

        return MilvusConnection.from_options(self.milvus_uri(), self)

    def milvus_uri(self) -> str | None:
        from operators.sinks.milvus_client import default_uri

        return self.milvus or default_uri(self.out)


def _coerce(key: str, f: dataclasses.Field, value):
    """Check a value from a file against the field's declared type."""
    t = str(f.type)
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


FIELDS = {f.name: f for f in dataclasses.fields(IngestConfig)}


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
    out = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in FIELDS:
            raise ConfigError(f"unknown config key {raw_key!r} in {path} (known: {', '.join(sorted(FIELDS))})")
        out[key] = _coerce(key, FIELDS[key], value)
    return out


def build_config(file_values: dict, overrides: dict) -> IngestConfig:
    """File values, then command-line overrides (None means 'not given')."""
    values = dict(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return IngestConfig(**values).validate()
