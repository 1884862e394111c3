"""Search on the text layer: BM25 over the chunks' text (Milvus' own function), dense over the
chunks' vectors, each page scored by its best chunk, and the two lists fused by reciprocal rank.

``--stage1 text`` fuses both (``--text-weights bm25=1,dense=0.25``, the default), ``text-bm25`` and
``text-dense`` take one. Where the server has no BM25 (Milvus < 2.5), ``text`` is dense only and
says so in one line. An index built before chunks (one ``sv_text`` row per page) is searched
the same way, dense only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operators import schema as S
from operators.errors import UsageError
from operators.models.text_layer import bm25_text
from operators.sinks.milvus_schema import BM25_LAYOUT, TEXT_LAYOUT

TEXT_MODES = ("text", "text-bm25", "text-dense")
LISTS = {"bm25": "text-bm25", "dense": "text-dense"}
# Dense at a quarter of BM25's weight. Reciprocal rank fusion puts BM25's first and second page
# 1/61 - 1/62 apart, less than any difference of ranks in the dense list makes: at equal weights
# the weaker list (a small dense model, over pages of one manual that all talk alike) decides
# between BM25's best pages, and a copied sentence's page loses its first place. On
# benchmarks/text.py's seed-5 draw (700 pages, 150 copied sentences) the fusion put the source
# page first for 76% at 1:1, 85% at 1:0.5, 89% at 1:0.25 (BM25 alone: 95%); checked on its
# default seed-21 draw (README, "Text layer"). Dense reorders BM25's candidates and adds the
# pages BM25 misses after them; --stage1 text-dense, or a higher weight, for vague queries.
DEFAULT_WEIGHTS = {"bm25": 1.0, "dense": 0.25}
RRF_K = 60
CHUNKS_PER_PAGE = 4  # chunk hits asked per page wanted: a page's chunks crowd the top of a list
MAX_LIMIT = 16384  # Milvus' largest topk


def parse_text_weights(spec: str | None) -> dict[str, float]:
    """``"bm25=1,dense=0.5"`` -> {"bm25": 1.0, "dense": 0.5}; unnamed lists keep weight 1."""
    weights = dict(DEFAULT_WEIGHTS)
    for item in filter(None, (x.strip() for x in (spec or "").split(","))):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or name not in weights:
            raise UsageError(f"--text-weights: {item!r} is not bm25=W or dense=W (e.g. bm25=1,dense=0.5)")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UsageError(f"--text-weights: {name}={value!r}: the weight must be a number") from None
        if weights[name] < 0:
            raise UsageError(f"--text-weights: {name}={value}: the weight must be >= 0")
    if not any(weights.values()):
        raise UsageError("--text-weights: at least one weight must be above 0")
    return weights


def weighted_rrf(lists: dict[str, list[tuple[str, float]]], weights: dict[str, float] | None = None,
                 k: int = RRF_K) -> list[tuple[str, float]]:
    """Fuse named ranked lists: a page scores the sum of weight / (k + rank) over the lists it
    is in; equal scores by page id (a ranking must not depend on a server's order)."""
    fused: dict[str, float] = {}
    for name, ranked in lists.items():
        w = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, (pid, _) in enumerate(ranked, start=1):
            fused[pid] = fused.get(pid, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def best_per_page(hits, score) -> list[tuple[str, float]]:
    best: dict[str, float] = {}
    for h in hits:
        pid = h["entity"][S.PAGE_ID]
        s = score(float(h["distance"]))
        if s > best.get(pid, float("-inf")):
            best[pid] = s
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


@dataclass
class TextResult:
    ranked: list[tuple[str, float]]  # the pages, best first
    lists: dict[str, list[tuple[str, float]]]  # each list searched ("text-bm25", "text-dense"): its pages
    notes: list[str] = field(default_factory=list)

    def lists_of(self, page_id: str) -> list[str]:
        return [name for name, ranked in self.lists.items() if any(p == page_id for p, _ in ranked)]


class TextSearch:
    """The text layer of an index (a ``MilvusReader`` with its plan discovered)."""

    def __init__(self, sink, text_model: str, weights: dict[str, float] | None = None, embedder=None):
        self.sink = sink
        self.text_model = text_model
        self.weights = weights or dict(DEFAULT_WEIGHTS)
        self._embedder = embedder
        self.dense_field = sink.plan.by_layout(TEXT_LAYOUT)
        self.bm25_field = sink.plan.by_layout(BM25_LAYOUT)
        if self.dense_field is None:
            raise UsageError("this index has no text layer vectors: ingest with --model <model>,text:all-MiniLM-L6-v2")

    @property
    def lexical(self) -> bool:
        return self.bm25_field is not None

    def unavailable_note(self) -> str:
        server = self.sink.server.label
        if self.dense_field.mode == "page":
            return ("lexical search unavailable: this index's text layer predates chunks (one vector per page): "
                    "dense text only; ingest into a new OUT for chunks and BM25")
        return f"lexical search unavailable on {server}: dense text only (BM25 needs Milvus >= 2.5 or Milvus Lite)"

    @property
    def embedder(self):
        if self._embedder is None:
            from operators.models.text import TextEmbedder

            self._embedder = TextEmbedder(self.text_model)
        return self._embedder

    def _limit(self, candidates: int, fp) -> int:
        return min(MAX_LIMIT, candidates * (CHUNKS_PER_PAGE if fp.mode == "chunks" else 1))

    def dense(self, query: str, candidates: int, where: str = "", vector=None) -> list[tuple[str, float]]:
        fp = self.dense_field
        self.sink.client.load_collection(fp.collection)
        q = vector if vector is not None else self.embedder.embed_queries([query])[0]
        hits = self.sink.client.search(fp.collection, data=[[float(x) for x in q]], anns_field=fp.field,
                                       limit=self._limit(candidates, fp), output_fields=[S.PAGE_ID], filter=where)[0]
        return best_per_page(hits, lambda d: d)[:candidates]

    def bm25(self, query: str, candidates: int, where: str = "") -> list[tuple[str, float]]:
        fp = self.bm25_field
        text = bm25_text(query)
        if fp is None or not text:
            return []
        self.sink.client.load_collection(fp.collection)
        hits = self.sink.client.search(fp.collection, data=[text], anns_field=fp.field,
                                       limit=self._limit(candidates, fp), output_fields=[S.PAGE_ID], filter=where,
                                       search_params={"metric_type": "BM25"})[0]
        # Milvus Lite returns the BM25 score negated (best first either way): the score is its size.
        return best_per_page(hits, abs)[:candidates]

    def search(self, query: str, candidates: int, mode: str = "text", where: str = "", vector=None) -> TextResult:
        """``vector``: the query's embedding, when the caller has it already."""
        if mode not in TEXT_MODES:
            raise UsageError(f"--stage1 {mode!r}: the text modes are {', '.join(TEXT_MODES)}")
        notes = []
        lists: dict[str, list[tuple[str, float]]] = {}
        if mode in ("text", "text-bm25"):
            if self.lexical:
                lists["text-bm25"] = self.bm25(query, candidates, where)
            else:
                notes.append(self.unavailable_note())
                if mode == "text-bm25":
                    raise UsageError(self.unavailable_note().replace(": dense text only", "") + ": use --stage1 text-dense")
        if mode in ("text", "text-dense"):
            lists["text-dense"] = self.dense(query, candidates, where, vector)
        if len(lists) == 1:
            ranked = next(iter(lists.values()))
        else:
            weights = {LISTS[name]: w for name, w in self.weights.items()}
            ranked = weighted_rrf({n: r for n, r in lists.items() if weights.get(n, 1.0) > 0}, weights)
        return TextResult(ranked[:candidates], lists, notes)
