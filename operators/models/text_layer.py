"""The text layer's chunks, and the text Milvus' BM25 analyzer reads.

A page's text becomes overlapping chunks of at most ``WORDS`` words (and ``CHARS`` characters, so
that a script written without spaces, or a page of one long token, still chunks). Each chunk is
one row of ``NAME_text``: its dense vector (``text:<model>``) and, where the server has it, its
BM25 sparse vector, which Milvus computes from the chunk's analyzed text. A page is scored by its
best chunk. The chunks are a pure function of the page text, so the Parquet archive keeps only
their vectors (``text_chunks``) and the text they come from (``text``).

Milvus Lite 3.2.2 has only the ``standard`` tokenizer (``icu``, ``jieba``, ``lindera`` are not
implemented there); it splits on spaces and punctuation by Unicode word rules, which is right for
Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari and Bengali text, but keeps a run of Han, kana,
Hangul or Thai characters as one token (``中文测试文本`` is one term; a query ``测试`` does not
find it). So those runs are turned into overlapping character bigrams (``中文 文测 测试 试文 文本``)
before the text is stored and before a query is searched, the way Lucene's CJK bigram filter
does: the same analyzer then works on every server that has BM25.

>>> bm25_text("Milvus 中文测试")
'Milvus 中文 文测 测试'
>>> [len(c.split()) for c in chunk_text(" ".join(["w"] * 300))]
[150, 150, 50]
"""

from __future__ import annotations

import re

WORDS = 150  # words per chunk: about 200 MiniLM tokens, within its 256
OVERLAP = 25  # words shared with the previous chunk, so that a sentence across a boundary is whole in one
CHARS = 1200  # characters per chunk at most (scripts without spaces; 150 English words are ~1,000)
MAX_BYTES = 65535  # Milvus' VARCHAR limit, in UTF-8 bytes
ANALYZER = {"tokenizer": "standard", "filter": ["lowercase"]}

# Scripts written without spaces between words (or, for Hangul, with particles attached):
# Han, Hiragana, Katakana, Hangul, Thai, Lao, Khmer, Myanmar.
_UNSPACED = ("\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\u1100-\u11ff"
             "\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f\uff66-\uff9f")
_RUN = re.compile(f"[{_UNSPACED}]+")


def _bigrams(m: re.Match) -> str:
    run = m.group(0)
    if len(run) == 1:
        return f" {run} "
    return " " + " ".join(run[i:i + 2] for i in range(len(run) - 1)) + " "


def bm25_text(text: str) -> str:
    """The text as the BM25 analyzer should read it: runs of unspaced scripts as bigrams, spaces
    collapsed. Used on the stored chunks and on queries alike."""
    return " ".join(_RUN.sub(_bigrams, text).split())


def _pieces(text: str) -> list[str]:
    """Words, with a word longer than CHARS (an unspaced script) cut into CHARS-long pieces."""
    out = []
    for w in text.split():
        out.extend(w[i:i + CHARS] for i in range(0, len(w), CHARS))
    return out


def chunk_text(text: str | None) -> list[str]:
    """The page's chunks: ``WORDS`` words each (``OVERLAP`` of them shared with the previous
    chunk), at most ``CHARS`` characters; none for an empty page."""
    words = _pieces(text or "")
    chunks, start = [], 0
    while start < len(words):
        stop, size = start, 0
        while stop < len(words) and stop - start < WORDS and (size + len(words[stop]) <= CHARS or stop == start):
            size += len(words[stop]) + 1
            stop += 1
        chunks.append(" ".join(words[start:stop]))
        if stop >= len(words):
            break
        start = max(start + 1, stop - OVERLAP)
    return chunks


def clip_bytes(text: str, limit: int = MAX_BYTES) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")
