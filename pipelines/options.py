"""Every command-line option, declared once: the parsers (pipelines/cli.py), the config file's
checks (pipelines/ingest/config.py) and README's table of ingest options (examples/readme.py) all come
from ``OPTIONS``.

An option belongs to ``ingest`` unless ``commands`` says more; ``elsewhere`` holds what differs in
another command (its help, its default). A config option's key is its argparse dest: a config file
holds the same keys, with the same choices and checks.

    >>> option("--milvus-timeout").key, option("--executor").choices
    ('milvus_timeout_s', ('ray', 'local'))
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

SAME_ROW = ""  # a README doc that joins the row of the option declared before

ALL = ("ingest", "fidelity", "report", "plan", "calibrate", "search", "milvus-load", "status", "quarantine", "relayout")
# Connection options of every command that talks to Milvus. Secrets only from the environment:
# $MILVUS_TOKEN, or --milvus-user with $MILVUS_PASSWORD.
STORE_CONNECTION = ("--milvus-user", "--milvus-db", "--milvus-ca-file", "--milvus-server-name")
MILVUS_CONNECTED = ("ingest", "fidelity", "report", "search", "milvus-load", "status", "relayout", "calibrate")
TOKEN_NOTE = "; token from $MILVUS_TOKEN"
MILVUS_ELSEWHERE = {
    "fidelity": dict(help="the index's Milvus, for the text layer's BM25 and fusion (default OUT/milvus.db where it exists)"),
    "report": dict(help="also measure what Milvus holds (default OUT/milvus.db when it exists)"),
    "search": dict(help="Milvus URI (default OUT/milvus.db)" + TOKEN_NOTE),
    "milvus-load": dict(help="Milvus URI (default OUT/milvus.db)" + TOKEN_NOTE),
    "status": dict(help="Milvus URI (default OUT/milvus.db when it exists)" + TOKEN_NOTE),
    "relayout": dict(help="Milvus URI (default OUT/milvus.db)"),
}
VECTORS_ELSEWHERE = {command: dict(help="the vector store (default: the one OUT/_index.json records, else OUT/milvus.db): a Milvus Lite file, a server URI or lancedb:PATH")
                     for command in ("fidelity", "report", "search", "milvus-load", "status", "relayout")}
VECTORS_ELSEWHERE["calibrate"] = dict(help="the store whose writes are measured (default: Milvus Lite in a scratch "
                                           "folder); a server URI measures that server's ingest")
INDEX_COLLECTION = dict(help="collection prefix (default: the index's, OUT/_index.json; else pagemill)")
COLLECTION_ELSEWHERE = {"fidelity": INDEX_COLLECTION, "report": INDEX_COLLECTION, "search": INDEX_COLLECTION,
                        "milvus-load": INDEX_COLLECTION, "status": dict(help="collection prefix (default: the index's)")}
WITH_STORES = tuple(c for c in ALL if c != "plan")  # every command that reads or writes a store
S3_ELSEWHERE = {command: dict(help="S3-compatible endpoint for an s3:// OUT") for command in WITH_STORES
                if command != "ingest"}
S3_ELSEWHERE["calibrate"] = dict(help="S3-compatible endpoint for an s3:// SOURCE")
STORE = "store"  # the group of the vector store's options
KINDS = {"str": {}, "int": {"type": int}, "float": {"type": float}, "list": {"action": "append"},
         "switch": {"action": "store_true"}}


@dataclass(frozen=True)
class Option:
    """``kind``: str, int, float, list (repeatable), flag (store ``const``; None when not given, so
    a config file's value stands) or switch (store_true, not a config key)."""

    flag: str  # "--milvus-timeout", or "SOURCE" for the positional
    help: str | None
    kind: str = "str"
    choices: tuple = ()
    key: str | None = None  # the config key and argparse dest (default: the flag's name)
    const: object = True
    check: str | None = None  # positive | non_negative
    commands: tuple = ("ingest",)
    config: bool = True  # a key of the config file
    group: str | None = None  # "store": an option of the vector store (IngestConfig.store, not a field of its own)
    default: object = None  # a group option's default (the others' defaults are IngestConfig's)
    cli: bool = True  # a command-line flag (False: a config file key only)
    doc: str | None = None  # README's meaning; SAME_ROW: in the previous option's row; None: the help
    more: tuple = ()  # further README rows, (cell, meaning)
    elsewhere: dict = field(default_factory=dict)  # command -> what differs there (help, default, required)

    @property
    def dest(self) -> str:
        return self.key or self.flag.lstrip("-").replace("-", "_").lower()

    def add_to(self, parser: argparse.ArgumentParser, command: str = "ingest") -> None:
        if not self.cli:
            return
        kw: dict = dict(KINDS.get(self.kind, {"action": "store_const", "const": self.const}))
        if self.choices:
            kw["choices"] = list(self.choices)
        kw["help"] = self.help
        kw.update(self.elsewhere.get(command, {}) if command != "ingest" else {})
        if self.flag.startswith("-"):
            if self.key:
                kw["dest"] = self.key
            parser.add_argument(self.flag, **kw)
        else:
            parser.add_argument(self.dest, nargs="?", **kw)

    def problem(self, value) -> str | None:
        """What is wrong with a configured value, naming its key; None when it is fine."""
        if value is None:
            return None
        if self.choices and value not in self.choices:
            return f"{self.dest}: {value!r} is not one of {', '.join(self.choices)}"
        if self.check == "positive" and value <= 0:
            return f"{self.dest}: must be > 0, got {value!r}"
        if self.check == "non_negative" and value < 0:
            return f"{self.dest}: must be >= 0, got {value!r}"
        return None


OPTIONS: tuple[Option, ...] = (
    Option('SOURCE', 'folder, file:// or s3://bucket/prefix/ of documents (recursive: PDF, XPS, EPUB, images, Office files...), or one file', doc='folder, `file://` URI or `s3://bucket/prefix/` of documents, recursive, or one file: PDF, XPS, EPUB, CBZ, FB2, MOBI, SVG, images (PNG, JPEG, TIFF with its pages, BMP, GIF, JPEG 2000, WebP...) and Office files (through LibreOffice); see [Real archives](#real-archives)'),
    Option('--out', 'output root: a folder, file:// or s3://bucket/prefix/', doc='output root (required): a folder, `file://` or `s3://bucket/prefix/` (then `--milvus` is required: Milvus Lite needs a local file)'),
    Option('--vectors', 'the vector store: a Milvus Lite file (default OUT/milvus.db), a Milvus server URI (http://host:port), or lancedb:PATH (a folder or s3://bucket/prefix; lancedb: alone is OUT/lancedb); default: the one the index records', doc='where the vectors go: a Milvus Lite file (default `OUT/milvus.db`), a Milvus server (`http://host:port`), or `lancedb:PATH`, a LanceDB folder or `lancedb:s3://bucket/prefix` (`lancedb:` alone: `OUT/lancedb`). The index records it in `_index.json`: later runs and every reader need no `--vectors`. See [LanceDB](#lancedb)', commands=("ingest", "fidelity", "report", "search", "milvus-load", "status", "relayout", "calibrate"), elsewhere=VECTORS_ELSEWHERE, group=STORE),
    Option('--lancedb-index', "LanceDB: a layout's vector index, LAYOUT=TYPE[:key=value,...] (repeatable; IVF_PQ, IVF_HNSW_SQ, IVF_HNSW_PQ, IVF_FLAT; e.g. mv=IVF_PQ:num_partitions=64,num_sub_vectors=16); default: none (exact search)", kind='list', doc="LanceDB: a layout's vector index, `LAYOUT=TYPE[:key=value,...]`, repeatable: `IVF_PQ` (`num_partitions`, `num_sub_vectors`, `num_bits`), `IVF_HNSW_SQ`, `IVF_HNSW_PQ` (`m`, `ef_construction`), `IVF_FLAT`; default none: exact (brute-force) search. Built at the end of the run, and trained again when a table has doubled since", commands=("ingest", "milvus-load"), elsewhere={"milvus-load": dict(default=[], help="as for ingest: LAYOUT=TYPE[:key=value,...]")}, group=STORE, default=()),
    Option('--lancedb-keep-days', 'LanceDB: days of table versions kept (7); older ones are pruned, and small fragments compacted, at the end of every run', kind='float', doc='LanceDB: days of table versions kept for time travel and readers of an older version (7); older versions are pruned and small fragments compacted at the end of every run', check="non_negative", commands=("ingest", "milvus-load"), group=STORE, default=7.0),
    Option('--milvus', 'Milvus URI: a Milvus Lite file path (default OUT/milvus.db) or http://host:port', doc='the same as `--vectors`, for Milvus: a Milvus Lite file or `http://host:port` (kept for the scripts that use it); a token comes from `$MILVUS_TOKEN`, never from a flag or file', commands=("ingest", "fidelity", "report", "search", "milvus-load", "status", "relayout", "calibrate"), elsewhere=MILVUS_ELSEWHERE, group=STORE),
    Option('--collection', "collection name prefix (default: the index's, else pagemill)", doc='collection name prefix (`pagemill` → `pagemill_pages`, `pagemill_patches`)', commands=("ingest", "fidelity", "report", "search", "milvus-load", "status"), elsewhere=COLLECTION_ELSEWHERE),
    Option('--milvus-timeout', 'seconds per Milvus call (60); past it the run stops with one line, the unit uncommitted', kind='float', key='milvus_timeout_s', doc='seconds per Milvus call (60); a Milvus that stops answering fails the run with one line, and the unit in flight stays uncommitted for the next run', check="positive", group=STORE, default=60.0),
    Option('--milvus-retries', 'extra attempts for transient Milvus failures, with backoff (3)', kind='int', doc='extra attempts for a transient Milvus failure (unavailable, reset, deadline), with exponential backoff (3); writes are idempotent upserts and deletes', check="non_negative", group=STORE, default=3),
    Option('--milvus-user', 'Milvus user (password from $MILVUS_PASSWORD)', doc='user name (the password comes from `$MILVUS_PASSWORD`), database name', commands=MILVUS_CONNECTED, group=STORE),
    Option('--milvus-db', "Milvus database name (default: the server's default)", doc=SAME_ROW, commands=MILVUS_CONNECTED, group=STORE),
    Option('--milvus-ca-file', 'TLS: PEM file of the CA or the self-signed server certificate', doc="TLS: PEM of the CA (or of a self-signed server certificate) and the name in it, when not the URI's host; `https://` URIs use TLS", commands=MILVUS_CONNECTED, group=STORE),
    Option('--milvus-server-name', "TLS: the certificate's server name, when not the URI's host", doc=SAME_ROW, commands=MILVUS_CONNECTED, group=STORE),
    Option('--milvus-token-env', 'the variable the Milvus token is read from', cli=False, commands=(), group=STORE, default="MILVUS_TOKEN"),
    Option('--milvus-password-env', 'the variable the Milvus password is read from', cli=False, commands=(), group=STORE, default="MILVUS_PASSWORD"),
    Option('--milvus-storage', "a Milvus server's storage, to measure its files: its localStorage.path (the standalone server's --data DIR) or the bucket's root path (s3://bucket/files)", commands=("report",), group=STORE, config=False),
    Option('--milvus-index', "index of a layout's field, LAYOUT=TYPE[:key=value,...] (repeatable; * for all; e.g. sv-mean=HNSW:M=16,efConstruction=200 or mv=IVF_PQ:nlist=1024,m=32; metric=... too; default AUTOINDEX)", kind='list', doc="a layout's index, `LAYOUT=TYPE[:key=value,...]`, repeatable; `*=` for every layout; `metric=` among the parameters (e.g. `sv-mean=HNSW:M=16,efConstruction=200`, `mv=IVF_PQ:nlist=1024,m=32`, `mv-bin=BIN_IVF_FLAT:nlist=256`); default `AUTOINDEX`. See [Milvus](#milvus)", commands=("ingest", "milvus-load", "calibrate"), elsewhere={"milvus-load": dict(default=[], help="as for ingest: LAYOUT=TYPE[:key=value,...]")}, group=STORE, default=()),
    Option('--milvus-mv-mode', 'multi-vector layouts as one row per vector, or array-of-structs fields (Milvus >= 2.6.4); auto picks by server version', choices=('auto', 'rows', 'struct'), doc='`auto` (default: `rows`), `rows` (one row per vector) or `struct` (array-of-structs field with MAX_SIM, Milvus >= 2.6.4; **not yet run against a server**, only against a recording stand-in: an explicit opt-in until it has)', commands=("ingest", "milvus-load"), elsewhere={"milvus-load": dict(default="auto", help="as for ingest (auto)")}, group=STORE, default="auto"),
    Option('--milvus-layouts', "layouts written to Milvus, comma-separated (default: all of the run's; sv-mean always)", doc='the layouts written to Milvus, comma-separated (default: every layout of the run; `sv-mean` always)', commands=("ingest", "milvus-load"), elsewhere={"milvus-load": dict(help="layouts to load, comma-separated (default: all in the shards)")}, group=STORE, default=()),
    Option('--milvus-partition-key', 'add a corpus field, the partition key, to every collection (multi-tenant indexes)', kind='flag', doc='add a `corpus` partition-key field to every collection and write `--corpus NAME` (`default`) into it: one index for many tenants, searched with `search --corpus`', commands=("ingest", "milvus-load"), elsewhere={"milvus-load": dict(default=False, help="as for ingest: a corpus partition key")}, group=STORE, default=False),
    Option('--corpus', 'the corpus (tenant) value written with --milvus-partition-key (default)', doc=SAME_ROW, commands=("ingest", "search", "milvus-load"), elsewhere={"search": dict(help="only pages of this corpus (indexes built with --milvus-partition-key)"), "milvus-load": dict(help="corpus value (default: the one recorded in each shard)")}),
    Option('--model', 'model spec: colqwen2-tiny, colqwen2, a hub id or a local directory', doc="`sim:<preset>[@<pages/s>]` (a simulated accelerator: no model, the preset's exact vector shapes, a sleep of 1/rate s per page; sizes a data path without GPUs), `colqwen2-tiny` (default), `colqwen2` (ColQwen2 v1.0 architecture: Qwen2-VL-2B), `colqwen2.5-tiny`, `colqwen2.5` (ColQwen2.5 architecture: the same `ColQwen2ForRetrieval` over Qwen2.5-VL-3B), `colmodernvbert-tiny`, `colmodernvbert` (ColModernVBERT, ~250M: `ColModernVBertForRetrieval`, ModernBERT + SigLIP/16 at 512 px; pages split into 512 px tiles plus a global view, 64 vectors each, up to a 2048 px longest edge), `colpali-tiny`, `colpali` (ColPali v1.3: PaliGemma-3B, 448 px, 1024 patches), or a hub id / local directory of a ColQwen2 or ColPali checkpoint (`transformers`' `ColQwen2ForRetrieval` / `ColPaliForRetrieval`, PIL image processors); add `,text:all-MiniLM-L6-v2` (offline, packaged weights), `,text:<hub id or folder>` or `,text:sim:<model>` (the text layer without its model: the model's dimension, a fixed pseudo-random vector per chunk, no torch; for sizing and tests) to also index each page's text layer: a vector per chunk of its text (`text_chunks`) and their mean (`sv_text`) in Parquet, a row per chunk in the `<collection>_text` Milvus collection, with Milvus' BM25 where the server has it (pages without text get neither; see [Text layer](#text-layer))", more=(("--model ...,sv:SPEC", "also a single-vector VLM embedder on the same page images: `sv:qwen3-vl-embedding-2b[@DIM]` (Qwen3-VL-Embedding-2B architecture on `transformers`' `Qwen3VLModel`: instruction prompts, last-token pooling, Matryoshka truncation to `DIM` of 2048 and re-normalised), `sv:qwen3-vl-embedding-tiny` (offline tests), or a hub id / folder of a `qwen3_vl` checkpoint; its vectors are the `sv_vlm` column and the `sv-vlm` layout (a page-level Milvus field; `search --stage1 sv-vlm` encodes the query with the model's query instruction)"),), commands=("ingest", "fidelity", "calibrate"), elsewhere={"fidelity": dict(help="query encoder (default: the model recorded in the shards)"), "calibrate": dict(default="colqwen2-tiny", help="model spec (as for ingest)")}),
    Option('--weights', 'load checkpoint weights, or random weights', choices=('hub', 'random'), doc='`random` (build from the preset config, offline) or `hub` (load the checkpoint)', commands=("ingest", "fidelity", "calibrate"), elsewhere={"fidelity": dict(help="default: as recorded in the shards"), "calibrate": dict(default="random", help="random (default) or hub")}),
    Option('--reindex', 'the index holds another model: embed every document again with this one, in a new generation (its own shards and collections) swapped in when complete; search uses the old one until then', kind='flag'),
    Option('--drop-layouts', 'layouts to remove from Milvus (comma-separated; the index keeps every layout it has unless told)', commands=("ingest", "relayout"), elsewhere={"relayout": dict(help="layouts to drop from Milvus, comma-separated")}),
    Option('--trust-remote-code', "allow a checkpoint's own Python code to run (refused by default)", kind='flag', doc="allow a checkpoint's own Python code (`auto_map` in its config) to run; refused by default with a message saying so"),
    Option('--device', 'auto, cpu, cuda or cuda:N', doc='`auto` = CUDA in bf16 when present, else CPU in fp32', commands=("ingest", "calibrate"), elsewhere={"calibrate": dict(default="auto")}),
    Option('--dtype', None, choices=('auto', 'float32', 'bfloat16', 'float16'), doc=SAME_ROW, commands=("ingest", "calibrate"), elsewhere={"calibrate": dict(default="auto")}),
    Option('--attn-implementation', 'attention kernels (auto: FlashAttention-2 on CUDA when flash-attn is installed, else sdpa)', choices=('auto', 'sdpa', 'eager', 'flash_attention_2'), doc="`auto` (FlashAttention-2 on CUDA when `flash-attn` is installed, else `sdpa`), `sdpa`, `eager`, `flash_attention_2`; the effective choice is in the summary's `model`"),
    Option('--max-pixels', "pixel budget per page (default: the model's)", kind='int', doc="pixel budget per page (default: the model's; ColQwen2 v1.0 = 768 visual tokens = 602,112 px)", check="positive", commands=("ingest", "calibrate")),
    Option('--batch-size', 'pages per forward pass (default 8)', kind='int', doc='pages per forward pass (8)', check="positive", commands=("ingest", "calibrate"), elsewhere={"calibrate": dict(default=8, help="pages per forward pass (8)")}),
    Option('--max-batch-tokens', 'visual tokens per forward pass; on out-of-memory a batch is halved down to one page (default: batch-size pages at the full budget)', kind='int', doc='visual tokens per forward pass (default: batch-size pages at the full budget); batches are filled smallest pages first, and on an out-of-memory error a batch is halved down to one page; a page that still does not fit is quarantined as `oom`', check="positive"),
    Option('--executor', 'ray (default) or local (a plain loop)', choices=('ray', 'local'), doc='`ray` (default, Ray Data streaming) or `local` (a plain loop, same operators, same output)', commands=("ingest", "relayout"), elsewhere={"relayout": dict(help="ray (default) or local")}),
    Option('--ray-address', 'join this Ray cluster (e.g. auto); default starts a local one', doc='join an existing cluster (`auto` on a cluster node); default starts a local Ray and stops it', commands=("ingest", "relayout")),
    Option('--num-gpus', 'GPUs per embedding actor (fractions allowed)', kind='float', doc='GPUs per embedding actor (default 1 when the cluster has GPUs, else 0; fractions allowed)', check="non_negative"),
    Option('--embed-actors', 'number of embedding actors', kind='int', doc='pool sizes (default: one embedding actor per GPU, or 1 on CPU; one encode actor per accelerator; one writer per two accelerators; render actors = the CPUs left)', check="positive"),
    Option('--render-actors', 'number of render actors', kind='int', doc=SAME_ROW, check="positive"),
    Option('--encode-actors', 'number of pooling/encoding actors (default: one per accelerator)', kind='int', doc=SAME_ROW, check="positive"),
    Option('--write-actors', 'number of writer actors (default: one per two accelerators)', kind='int', doc=SAME_ROW, check="positive"),
    Option('--write-placement', 'where Parquet and Milvus writes run: auto (default: workers, except Milvus Lite or a local OUT on a multi-node cluster), workers, driver', choices=('auto', 'workers', 'driver'), doc="where Parquet and Milvus writes run: `auto` (default: writer actors on the workers; in the driver with Milvus Lite, a single-process database file; one writer on the driver's node when OUT is a local folder and the cluster has several nodes), `workers`, `driver`"),
    Option('--milvus-bulk-dir', 'first load into empty collections: writers stage Parquet import files here (where the Milvus server reads them: its local storage, or s3://bucket/prefix in its bucket) instead of upserting, and Milvus imports them at the end of the run', doc="a first load into empty collections: the writers stage Parquet import files (in the collections' schema) there instead of upserting, and Milvus imports them itself at the end of the run; a directory the Milvus server reads (its local storage, or `s3://bucket/prefix` in the bucket it uses). A run killed before the import leaves the load pending: the next run with the option finishes it, a run without it refuses", group=STORE, commands=("ingest", "calibrate")),
    Option('--write-batch-pages', 'pages per writer call: the most a Parquet part holds (64)', kind='int', doc='pages per writer call, the most one Parquet part holds (64)', check="positive"),
    Option('--object-store-mb', 'Ray object store budget for pages between stages (default 128 MB per actor, at least 256)', kind='float', doc='Ray object-store budget for pages streaming between stages (default 128 MB per actor, at least 256): rendering runs ahead of the GPUs by at most this much, so memory follows the units in flight, not the corpus', check="positive"),
    Option('--page-timeout', 'seconds one page may take to render', kind='float', key='page_timeout_s', doc='seconds one page may take to render before the document is abandoned (60)', check="positive"),
    Option('--delete-missing', 'remove documents that are gone from the source from the shards and Milvus (off by default)', kind='flag', doc='remove documents that are gone from the source from the shards (rewritten without them) and from Milvus; off by default; refuses when the source lists nothing at all; the summary counts `documents.deleted` and `pages.deleted`'),
    Option('--ledger-compact-every', "fold the ledger's per-unit records into one snapshot past this many (256)", kind='int', doc='past this many per-unit ledger records (256), fold them into one snapshot (`OUT/_ledger/snapshots/`), so planning after many runs reads one object plus the newer records', check="positive"),
    Option('--retry-quarantined', 'process only documents that were quarantined (or partly indexed), e.g. after adding passwords', kind='flag', doc='process only documents whose committed version was quarantined or partly indexed (e.g. after adding passwords); their old quarantine rows are replaced'),
    Option('--passwords', "file of '<glob><TAB><password>' lines for encrypted documents", doc="file of `<glob><TAB><password>` lines (the corpus' `PASSWORDS.tsv` format works): passwords tried on encrypted documents whose path or name matches; none matching → `encrypted`, all wrong → `wrong_password`"),
    Option('--max-doc-bytes', 'larger documents are quarantined as too_large', kind='int', doc='larger documents are quarantined as `too_large` / `too_many_pages`', check="positive"),
    Option('--max-pages', 'documents with more pages are quarantined', kind='int', doc=SAME_ROW, check="positive"),
    Option('--layouts', 'extra storage layouts, comma-separated: mv-pool3, mv-rowcol, mv-int8, mv-bin, mv-pool3-bin, sv-fde, ... (mv and sv-mean are always written)', commands=("ingest", "relayout", "calibrate"), elsewhere={"calibrate": dict(help="extra layouts whose encoding and writes are measured, comma-separated (as for ingest)"), "relayout": dict(required=True, help="layouts to add, comma-separated (mv-pool3, mv-rowcol, mv-bin, sv-fde, ...)")}),
    Option('--fde-reps', 'sv-fde: repetitions (10)', kind='int', check="positive"),
    Option('--fde-bits', 'sv-fde: SimHash bits per repetition, 2^bits buckets (4)', kind='int', check="positive"),
    Option('--fde-proj-dim', 'sv-fde: projected dims per bucket (16)', kind='int', check="positive"),
    Option('--fde-seed', 'sv-fde: random seed (42)', kind='int'),
    Option('--no-text', "do not extract the pages' text layer", kind='flag', key='extract_text', const=False),
    Option('--ocr', "OCR for pages without text (Tesseract): auto (default: pages whose text layer is empty or too thin, when Tesseract is installed), always, never", choices=('auto', 'always', 'never'), doc="Tesseract through PyMuPDF's OCR text page, on the render workers, for pages without text: `auto` (default: pages whose text layer is empty or thinner than 1 character a square inch, when Tesseract's data is found; the summary says which), `always` (every page, its OCR text replacing its own), `never`. The OCR text feeds the text layer like a native one; each page row's `text_source` says `native`, `ocr` or `none`. A missing engine or language is one line naming the Debian package (`tesseract-ocr`, `tesseract-ocr-deu`). See [Real archives](#real-archives)"),
    Option('--ocr-languages', "Tesseract's languages, joined by + (eng)", doc="Tesseract's languages, joined by `+` (`eng`; e.g. `eng+deu`), and the resolution it reads pages at (300 dpi)"),
    Option('--ocr-dpi', 'resolution OCR reads a page at (300)', kind='int', doc=SAME_ROW, check="positive"),
    Option('--page-images', 'keep each page as an image for answers: FORMAT:LONGEST_EDGE (webp:1024, jpeg:1600, png:768)', doc="write each rendered page as an image next to the shards, `FORMAT:LONGEST_EDGE` (`webp:1024`; `jpeg`, `png`): downscaled once from the rendered pixels (never enlarged), under `OUT/images/`, committed with the unit; a URI per page row (`image_uri`) in Parquet and the store, returned by `search --json`"),
    Option('--dedup', 'pages: embed near-duplicate pages (same perceptual hash) once per batch; documents with the same bytes are always indexed once', choices=('none', 'pages'), doc="a document whose bytes equal an indexed one's is never rendered or embedded again (its rows are copied from the archive); `pages` also embeds near-duplicate pages (the same 64-bit perceptual hash of the rendered page) once per batch; `none` (default) only counts them"),
    Option('--office-timeout', 'seconds LibreOffice may take to convert one Office file (120)', kind='float', key='office_timeout_s', doc='seconds LibreOffice (`soffice --headless --convert-to pdf`, where installed) may take to convert one Office file (120); past it the file is quarantined as `convert_timeout`', check="positive"),
    Option('--fidelity-queries', "after the run, measure each layout's fidelity with N queries", kind='int', check="non_negative"),
    Option('--unit-max-docs', 'documents per work unit (the unit of commit and resume)', kind='int', doc='size of a work unit, the unit of commit and resume (32 docs, 256 MiB)', check="positive"),
    Option('--unit-max-bytes', 'bytes per work unit', kind='int', doc=SAME_ROW, check="positive"),
    Option('--include', 'glob of paths to include (repeatable; e.g. "*.pdf" for PDFs only)', kind='list', doc='globs on paths relative to SOURCE (repeatable; e.g. `--include "*.pdf"` for PDFs only, `--exclude "drafts/*"`); every file skipped is counted by reason in the summary (`documents.skipped`)'),
    Option('--exclude', 'glob of paths to exclude (repeatable)', kind='list', doc=SAME_ROW),
    Option('--s3-endpoint-url', 'S3-compatible endpoint (default $AWS_ENDPOINT_URL, else AWS)', doc='S3-compatible endpoint (MinIO, Ceph, R2); default `$AWS_ENDPOINT_URL`, else AWS', commands=WITH_STORES, elsewhere=S3_ELSEWHERE),
    Option('--s3-region', 'S3 region', doc='region; `auto`, `path` or `virtual` bucket addressing'),
    Option('--s3-addressing-style', 'bucket addressing style', choices=('auto', 'path', 'virtual'), doc=SAME_ROW),
    Option('--s3-retry-mode', 'botocore retry mode (standard)', choices=('standard', 'adaptive'), doc='botocore retry mode (`standard` or `adaptive`) and attempts per request (8)'),
    Option('--s3-max-attempts', 'attempts per S3 request, retries included (8)', kind='int', doc=SAME_ROW, check="positive"),
    Option('--config', 'YAML or JSON file with the same keys as these flags', doc='YAML or JSON file with these keys', config=False),
    Option('--summary', 'also write the JSON run summary here', doc='also write the JSON run summary to this file', commands=("ingest", "relayout"), elsewhere={"relayout": dict(help="also write the JSON run summary to this file")}),
    Option('--progress-interval', 'seconds between progress lines', kind='float', key='progress_interval_s', doc='seconds between progress lines on stderr (10)', check="positive"),
    Option('--pushgateway', "push the run's metrics to this Prometheus Pushgateway (http://host:9091) at the heartbeat (at most every 15 s) and at the end, with the exit status; job pagemill, instance OUT's URI", doc="push the run's metrics (see [Metrics](#metrics)) to this Prometheus Pushgateway, `http://host:9091`, at the heartbeat (at most every 15 s) and at the end with the exit status, even of a run that fails or is refused; group: job `pagemill`, instance OUT's URI. A push that fails is one warning line, never the run's failure"),
    Option('--metrics-textfile', "write the same metrics to this .prom file for node exporter's textfile collector (atomically), at the heartbeat and at the end", doc="write the same metrics to this `.prom` file for node exporter's textfile collector, atomically (a file beside it, renamed), at the heartbeat and at the end"),
    Option('--lock-lease', "seconds a run's lock on OUT lasts without renewal (60); a second run on OUT refuses", kind='float', key='lock_lease_s', doc="a run holds `OUT/_lock.json` (created only if absent) and renews it every lease/4 seconds; a second run on the same OUT refuses with one line naming the holder and what was checked; a dead run's lock is taken over at once when its process on this host is gone or its Ray job has finished, else when the lease ends (60 s): a run waits for that, and refuses as soon as it sees the holder renew", check="positive"),
    Option('--quiet', 'do not print the summary at the end', kind='switch', doc='do not print the summary', config=False, commands=("ingest", "relayout")),
    Option('--verbose', 'show what Ray, transformers and other libraries print (default: kept in a log file, named when something fails; a run copies it to OUT/_runs/<run>.log)', kind='switch', doc='show what Ray, transformers and the other libraries print (by default it goes to a log file, copied to `OUT/_runs/<run>.log` and named when something fails); every command takes it', config=False, commands=ALL),
    Option("--json", "print JSON instead of a table", kind="switch", config=False,
           commands=("fidelity", "search", "milvus-load", "status", "quarantine"),
           elsewhere={"milvus-load": dict(help="print the summary as JSON"),
                      "status": dict(help="print JSON (healthy, problems, and everything else)"),
                      "quarantine": dict(help="print JSON")}),
)

CONFIG_OPTIONS = tuple(o for o in OPTIONS if o.config)
STORE_OPTIONS = tuple(o for o in OPTIONS if o.group == STORE)


def option(flag: str) -> Option:
    return next(o for o in OPTIONS if o.flag == flag)


def add_options(parser: argparse.ArgumentParser, command: str, *flags: str) -> None:
    """The options ``flags`` (default: all of ``command``'s, in their declared order) on ``parser``."""
    for o in [option(f) for f in flags] if flags else [o for o in OPTIONS if command in o.commands]:
        assert command in o.commands, f"{o.flag} is not declared for {command}"
        o.add_to(parser, command)


def config_problem(values) -> str | None:
    """The first declared check a config (an IngestConfig) fails, naming its key."""
    for o in CONFIG_OPTIONS:
        problem = o.problem(values.store.get(o.dest) if o.group == STORE else getattr(values, o.dest))
        if problem:
            return problem
    return None


def foreign_store_option(options: dict, kind: str) -> str | None:
    """An option of another kind of store than ``kind`` (``milvus_*`` for LanceDB, ``lancedb_*``
    for Milvus) given a value of its own: it would do nothing, so it is refused, naming its key."""
    from operators.stores import KINDS

    for o in STORE_OPTIONS:
        other = o.dest.split("_", 1)[0]
        if o.cli and other in KINDS and other != kind and options.get(o.dest) not in (None, o.default, [], ()):
            return f"{o.dest}: an option of {KINDS[other]}, and the vectors go to {KINDS[kind]}"
    return None


def store_options(values) -> dict:
    """The vector store's options (``group="store"``), each given value or its default, from a
    command's parsed arguments or a mapping (a config's ``store``); what a command does not
    declare takes its default."""
    def get(key):
        return values.get(key) if isinstance(values, dict) else getattr(values, key, None)

    return {o.dest: (v if (v := get(o.dest)) is not None else o.default) for o in STORE_OPTIONS}


def readme_table(command: str = "ingest") -> str:
    """README's table of a command's options (Markdown), from the declarations."""
    rows: list[list] = []
    for o in OPTIONS:
        if command not in o.commands or not o.cli:
            continue
        cell = f"`{o.flag}`"
        if o.doc == SAME_ROW and rows:
            rows[-1][0].append(cell)
        else:
            rows.append([[cell], o.doc or (o.help or "")])
        rows += [[[f"`{c}`"], text] for c, text in o.more]
    lines = ["| flag | meaning (default) |", "|---|---|"]
    return "\n".join(lines + [f"| {', '.join(cells)} | {text} |" for cells, text in rows]) + "\n"
