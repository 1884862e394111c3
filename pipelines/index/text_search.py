"""Search on the text layer: BM25 over the chunks' text (the store's own), dense over the chunks'
vectors, each page scored by its best chunk, and the two lists fused by reciprocal rank.

``--stage1 text`` fuses both (``--text-weights bm25=1,dense=0.25``, the default), ``text-bm25`` and
``text-dense`` take one. Where the store has no BM25 (Milvus < 2.5), ``text`` is dense only and
says so in one line. An index built before chunks (one ``sv_text`` row per page) is searched
the same way, dense only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.errors import UsageError
from operators.models.text_layer import bm25_text
from operators.stores.door import Hit, VectorStore

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


def best_per_page(hits: list[Hit]) -> list[tuple[str, float]]:
    best: dict[str, float] = {}
    for h in hits:
        if h.score > best.get(h.page_id, float("-inf")):
            best[h.page_id] = h.score
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


@dataclass
class TextResult:
    ranked: list[tuple[str, float]]  # the pages, best first
    lists: dict[str, list[tuple[str, float]]]  # each list searched ("text-bm25", "text-dense"): its pages
    notes: list[str] = field(default_factory=list)

    def lists_of(self, page_id: str) -> list[str]:
        return [name for name, ranked in self.lists.items() if any(p == page_id for p, _ in ranked)]


class TextSearch:
    """The text layer of an index (its vector store, discovered)."""

    def __init__(self, vectors: VectorStore, text_model: str, weights: dict[str, float] | None = None, embedder=None):
        self.vectors = vectors
        self.text_model = text_model
        self.weights = weights or dict(DEFAULT_WEIGHTS)
        self._embedder = embedder
        self.held = vectors.text_lists()
        if not self.held["dense"]:
            raise UsageError("this index has no text layer vectors: ingest with --model <model>,text:all-MiniLM-L6-v2")

    @property
    def lexical(self) -> bool:
        return self.held["bm25"]

    def unavailable_note(self) -> str:
        return self.vectors.text_note()

    @property
    def embedder(self):
        if self._embedder is None:
            from operators.models.text import text_embedder

            self._embedder = text_embedder(self.text_model)
        return self._embedder

    def _limit(self, candidates: int) -> int:
        return candidates * (CHUNKS_PER_PAGE if self.held.get("per_chunk", True) else 1)

    def dense(self, query: str, candidates: int, corpus: str | None = None, vector=None) -> list[tuple[str, float]]:
        q = vector if vector is not None else self.embedder.embed_queries([query])[0]
        return best_per_page(self.vectors.search_text("dense", q, self._limit(candidates), corpus))[:candidates]

    def bm25(self, query: str, candidates: int, corpus: str | None = None) -> list[tuple[str, float]]:
        text = bm25_text(query)
        if not self.lexical or not text:
            return []
        return best_per_page(self.vectors.search_text("bm25", text, self._limit(candidates), corpus))[:candidates]

    def search(self, query: str, candidates: int, mode: str = "text", corpus: str | None = None,
               vector=None) -> TextResult:
        """``vector``: the query's embedding, when the caller has it already."""
        if mode not in TEXT_MODES:
            raise UsageError(f"--stage1 {mode!r}: the text modes are {', '.join(TEXT_MODES)}")
        notes = []
        lists: dict[str, list[tuple[str, float]]] = {}
        if mode in ("text", "text-bm25"):
            if self.lexical:
                lists["text-bm25"] = self.bm25(query, candidates, corpus)
            else:
                notes.append(self.unavailable_note())
                if mode == "text-bm25":
                    raise UsageError(self.unavailable_note().replace(": dense text only", "") + ": use --stage1 text-dense")
        if mode in ("text", "text-dense"):
            lists["text-dense"] = self.dense(query, candidates, corpus, vector)
        if len(lists) == 1:
            ranked = next(iter(lists.values()))
        else:
            weights = {LISTS[name]: w for name, w in self.weights.items()}
            ranked = weighted_rrf({n: r for n, r in lists.items() if weights.get(n, 1.0) > 0}, weights)
        return TextResult(ranked[:candidates], lists, notes)
