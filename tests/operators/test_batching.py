"""Batching by visual-token budget and OOM recovery, with an injected out-of-memory error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from operators import schema as S
from operators.batching import OOM, embed_with_split, token_batches
from operators.embed import EmbedPages
from operators.models import ModelSpec
from pipelines.ingest.commit import fold_failed


def test_batches_respect_pages_and_tokens():
    tokens = [700, 100, 100, 768, 300, 50, 2000]
    batches = token_batches(tokens, max_pages=3, max_tokens=800)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len(b) <= 3
        assert sum(tokens[i] for i in b) <= 800 or len(b) == 1  # one oversized page goes alone
    assert [6] in batches


class FakeOOM(RuntimeError):
    pass


def test_split_in_half_down_to_one_page():
    calls = []

    def embed(items):  # anything with a page over 5, or more than 2 pages, runs out of memory
        calls.append(list(items))
        if len(items) > 2 or any(x > 5 for x in items):
            raise FakeOOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in items]

    stats = {}
    out = embed_with_split(embed, [1, 2, 3, 9, 4, 5], stats)
    assert out == [10, 20, 30, OOM, 40, 50]
    assert calls[0] == [1, 2, 3, 9, 4, 5] and [9] in calls
    assert stats["oom_splits"] >= 3


def test_other_errors_are_not_swallowed():
    def embed(items):
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        embed_with_split(embed, [1, 2])


def test_embed_stage_turns_an_unfittable_page_into_a_quarantined_page(monkeypatch, tmp_path):
    from operators.encode import EncodePages
    from operators.io.store import LocalStore
    from operators.writer import PagesWriter

    stage = EmbedPages(ModelSpec(), batch_size=4)
    stage.setup()
    real = stage.adapter.embed_images

    def flaky(images, keys=None):  # the tallest page never fits
        if any(im.shape[0] >= 336 for im in images):
            raise RuntimeError("CUDA out of memory (injected)")
        return real(images, keys)

    monkeypatch.setattr(stage.adapter, "embed_images", flaky)
    rng = np.random.default_rng(0)
    sizes = [(224, 280), (336, 224), (252, 252)]
    info = {"docs": [{"uri": "file:///d.pdf", "doc_id": "x", "version": "1", "size": 1, "status": "indexed",
                      "n_pages": 3}], "quarantine": [], "n_pages": 3}
    rows = {f.name: [] for f in S.RENDERED_SCHEMA}
    for n, (h, w) in enumerate(sizes):
        for k, v in ((S.UNIT_ID, "u"), (S.KIND, S.KIND_PAGE), (S.PAGE_ID, S.page_id_for("file:///d.pdf", n)),
                     (S.DOC_ID, "x"), (S.SOURCE_URI, "file:///d.pdf"),
                     (S.DOC_VERSION, "1"), (S.PAGE_NUMBER, n), (S.WIDTH, w), (S.HEIGHT, h),
                     (S.PIXELS, rng.integers(0, 255, h * w * 3, dtype=np.uint8).tobytes()), (S.TEXT, None),
                     (S.UNIT_INFO, None)):
            rows[k].append(v)
    rows = {k: v or [None] * len(sizes) for k, v in rows.items()}  # (text_source, page_hash, page_image)
    out = stage(pa.table(rows, schema=S.RENDERED_SCHEMA))
    assert out[S.KIND].to_pylist() == [S.KIND_PAGE, S.KIND_PAGE_FAILED, S.KIND_PAGE]
    assert json.loads(out[S.UNIT_INFO][1].as_py())["reason"] == "oom"
    assert out[S.MV_RAW][1].as_py() is None and len(out[S.MV_RAW][0].as_py()) > 0
    encode = EncodePages(stage.dim)
    writer = PagesWriter(LocalStore(tmp_path), S.pages_schema(stage.dim), {}, "run")
    results = writer(encode(out))
    parts = [json.loads(r) for r, k in zip(results["result"].to_pylist(), results["kind"].to_pylist()) if k == "part"]
    assert [p["docs"] for p in parts] == [{"file:///d.pdf": 2}]
    entries = fold_failed(info, parts)
    assert info["n_pages"] == 2 and info["docs"][0]["status"] == "partial" and info["docs"][0]["n_pages"] == 2
    assert entries == [{"source_uri": "file:///d.pdf", "doc_version": "1", "page_number": 1,
                                   "stage": "embed", "reason": "oom",
                                   "detail": "does not fit in device memory even alone"}]
