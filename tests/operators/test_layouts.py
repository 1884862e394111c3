"""Pooling, encodings, FDE and fidelity: exact small cases and checks against references."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from operators.layouts import encodings as E
from operators.layouts.fde import FdeEncoder, FdeParams
from operators.layouts.layout import (
    LayoutEncoder,
    LayoutError,
    LayoutScorer,
    maxsim,
    parse_layout,
    parse_layouts,
)
from operators.layouts.pooling import hierarchical_pool, reference_clusters, rowcol_pool, ward_clusters
from operators.models import PageEmbedding
from pipelines.analysis.fidelity import ranking_metrics, score_layouts, sentences


def _canonical(labels):
    """Cluster labels renumbered by first appearance: equal partitions compare equal."""
    seen = {}
    return [seen.setdefault(x, len(seen)) for x in labels]


def _unit(rng, n, d=128):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hierarchical_pool_hand_made_tensor():
    special = np.array([[0.6, 0.0, 0.8]])
    patches = np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0.1, 0.99, 0], [0, 0, 1], [0, 0.1, 0.99]])
    patches = patches / np.linalg.norm(patches, axis=1, keepdims=True)
    page = np.concatenate([special, patches]).astype(np.float32)
    out = hierarchical_pool(page, offset=1, n_patches=6, factor=2)
    expected = [[0.6, 0.0, 0.8],  # the special token, untouched
                [0.998733, 0.050313, 0.0], [0.050313, 0.998733, 0.0], [0.0, 0.050313, 0.998733]]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_pool_factor_one_is_identity_and_few_patches_give_one_vector():
    rng = np.random.default_rng(0)
    page = _unit(rng, 20)
    assert hierarchical_pool(page, 2, 15, 1) is page
    out = hierarchical_pool(page, 2, 2, 3)  # 2 patches < factor 3: one pooled vector
    assert out.shape == (20 - 2 + 1, 128)
    np.testing.assert_allclose(out[:2], page[:2])
    np.testing.assert_allclose(out[3:], page[4:])


@pytest.mark.parametrize("n,factor", [(30, 2), (97, 3), (250, 4), (768, 3)])
def test_same_clusters_as_scipy_reference_on_random_pages(n, factor):
    rng = np.random.default_rng(n)
    x = _unit(rng, n)
    k = max(1, n // factor)
    assert _canonical(ward_clusters(x, k)) == _canonical(reference_clusters(x, k))


def test_same_clusters_as_scipy_reference_on_tiny_model_pages():
    from operators.models import ModelSpec, adapter_for

    a = adapter_for(ModelSpec())
    rng = np.random.default_rng(3)
    for emb in a.embed_images([rng.integers(0, 255, (252, 280, 3), dtype=np.uint8) for _ in range(3)]):
        p = emb.patch_vectors()
        k = max(1, len(p) // 3)
        assert _canonical(ward_clusters(p, k)) == _canonical(reference_clusters(p, k))


def test_rowcol_pool_on_a_grid():
    rng = np.random.default_rng(1)
    grid_h, grid_w = 3, 4
    page = _unit(rng, 2 + 12 + 1)
    out = rowcol_pool(page, 2, 12, grid_h, grid_w)
    assert out.shape == (2 + 3 + 4 + 1, 128)
    row0 = page[2:6].mean(axis=0)
    np.testing.assert_allclose(out[2], row0 / np.linalg.norm(row0), atol=1e-6)
    col0 = page[2:14:4].mean(axis=0)
    np.testing.assert_allclose(out[5], col0 / np.linalg.norm(col0), atol=1e-6)
    with pytest.raises(ValueError):
        rowcol_pool(page, 2, 11, grid_h, grid_w)


def test_int8_round_trip_within_half_a_step():
    x = np.random.default_rng(2).standard_normal((50, 128)).astype(np.float32)
    codes, scale = E.int8_encode(x)
    assert codes.dtype == np.int8 and scale.shape == (50,)
    err = np.abs(E.int8_decode(codes, scale) - x)
    assert (err <= scale[:, None] / 2 + 1e-7).all()


def test_bf16_round_trip_relative_error():
    x = np.random.default_rng(3).standard_normal((10, 128)).astype(np.float32)
    y = E.from_bf16_bits(E.to_bf16_bits(x))
    assert (np.abs(y - x) <= np.abs(x) * 2**-8 + 1e-30).all()


def test_binary_keeps_signs_and_hamming_equals_dot_of_signs():
    rng = np.random.default_rng(4)
    q, d = rng.standard_normal((7, 128)), rng.standard_normal((9, 128))
    qb, db = E.binary_encode(q), E.binary_encode(d)
    assert db.shape == (9, 16)  # 1 bit per dim: 32x smaller than fp32
    np.testing.assert_array_equal(E.binary_decode(db, 128), np.where(d > 0, 1.0, -1.0))
    sq, sd = np.where(q > 0, 1.0, -1.0), np.where(d > 0, 1.0, -1.0)
    np.testing.assert_array_equal(E.hamming_similarity(qb, db, 128), sq @ sd.T)


def test_fde_tracks_maxsim_and_is_seeded():
    rng = np.random.default_rng(5)
    enc = FdeEncoder(128, FdeParams(reps=20, bits=4, proj_dim=32, seed=7))
    q = _unit(rng, 12)
    docs = []
    for _ in range(60):  # documents that share a varying fraction of the query's directions
        d = _unit(rng, 40)
        m = rng.integers(0, 12)
        d[:m] = q[:m] + 0.3 * _unit(rng, m)
        docs.append(d / np.linalg.norm(d, axis=1, keepdims=True))
    exact = np.array([maxsim(q, d) for d in docs])
    approx = np.array([enc.encode_query(q) @ enc.encode_document(d) for d in docs])
    assert np.corrcoef(exact, approx)[0, 1] > 0.8
    again = FdeEncoder(128, FdeParams(reps=20, bits=4, proj_dim=32, seed=7))
    np.testing.assert_array_equal(again.encode_document(docs[0]), enc.encode_document(docs[0]))
    assert enc.encode_document(docs[0]).shape == (20 * 16 * 32,)


def test_layout_names():
    assert [x.name for x in parse_layouts("mv-pool3-int8,sv-fde")] == ["mv", "sv-mean", "mv-pool3-int8", "sv-fde"]
    lay = parse_layout("mv-pool3-bin")
    assert (lay.pooling, lay.factor, lay.encoding, lay.column) == ("pool", 3, "bin", "mv_pool3_bin")
    for bad in ("mv-pool", "mv-int4", "sv-max", "pool3"):
        with pytest.raises(LayoutError, match=bad):
            parse_layout(bad)


def _embs(rng, n_pages, dim=128):
    embs = []
    for i in range(n_pages):
        gh, gw = 4 + i % 3, 5
        v = _unit(rng, 3 + gh * gw + 2, dim)
        embs.append(PageEmbedding(v, 3, gh * gw, gh, gw))
    return embs


def test_encoder_columns_round_trip_through_arrow():
    rng = np.random.default_rng(6)
    embs = _embs(rng, 5)
    layouts = parse_layouts("mv-pool3,mv-int8,mv-bf16,mv-bin,mv-rowcol,mv-fp32,sv-fde")
    cols = LayoutEncoder(layouts, 128).columns([*embs, None])
    assert cols["mv_int8"].type == pa.list_(pa.binary(128)) and "mv_int8_scale" in cols
    assert cols["mv_bf16"].type == pa.list_(pa.binary(256))
    assert cols["mv_bin"].type == pa.list_(pa.binary(16))
    assert cols["mv_fp32"].null_count == 1
    for i, e in enumerate(embs):
        n_special = len(e.vectors) - e.n_patches
        assert len(cols["mv_pool3"][i]) == n_special + max(1, e.n_patches // 3)
        assert len(cols["mv_rowcol"][i]) == n_special + e.grid_h + e.grid_w
    table = pa.table({k: v.slice(0, 5) for k, v in cols.items()})
    table = table.append_column("mv", E.ragged_array([e.vectors.astype(np.float16) for e in embs], "fp16", 128))
    scorer = LayoutScorer(parse_layout("mv-fp32"), table, 128)
    for d, e in zip(scorer.docs, embs):
        np.testing.assert_array_equal(d, e.vectors)
    for name in ("mv-int8", "mv-bf16"):
        scorer = LayoutScorer(parse_layout(name), table, 128)
        for d, e in zip(scorer.docs, embs):
            np.testing.assert_allclose(d, e.vectors, atol=2e-2)
    scorer = LayoutScorer(parse_layout("mv-bin"), table, 128)
    np.testing.assert_array_equal(scorer.docs[1], np.where(embs[1].vectors > 0, 1.0, -1.0))


def test_fidelity_reference_is_exact_and_destroyed_layout_is_near_chance():
    rng = np.random.default_rng(7)
    embs = _embs(rng, 120)
    layouts = parse_layouts("mv-int8")
    cols = LayoutEncoder(layouts, 128).columns(embs)
    sv = np.stack([e.patch_vectors().mean(axis=0) for e in embs])
    sv /= np.linalg.norm(sv, axis=1, keepdims=True)
    table = pa.table({"mv": E.ragged_array([e.vectors for e in embs], "fp16", 128),
                      "sv_mean": pa.FixedSizeListArray.from_arrays(pa.array(sv.ravel(), pa.float32()), 128), **cols})
    # a destroyed layout: same shape, random vectors
    table = table.append_column("mv_fp32", E.ragged_array([_unit(rng, len(e.vectors)) for e in embs], "fp32", 128))
    queries = [embs[i].vectors[3:9] + 0.1 * _unit(rng, 6) for i in range(0, 120, 6)]
    res = score_layouts(queries, table, parse_layouts("mv-int8,mv-fp32"), 128)
    assert res["mv"] == {"recall_at_10": 1.0, "ndcg_at_10": 1.0}
    assert res["mv-int8"]["recall_at_10"] >= 0.9
    assert res["mv-fp32"]["recall_at_10"] < 0.25  # chance is 10/120
    assert 0 < res["sv-mean"]["recall_at_10"] < 1


def test_ranking_metrics_and_sentences():
    ref = np.arange(20, dtype=float)
    assert ranking_metrics(ref, ref) == (1.0, 1.0)
    r, n = ranking_metrics(ref, -ref)
    assert r == 0.0 and n == 0.0
    got = sentences("Too short. This sentence has more than five words in it! And here is one more long sentence.")
    assert got == ["This sentence has more than five words in it!", "And here is one more long sentence."]
