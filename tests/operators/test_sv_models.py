"""The single-vector VLM embedder on transformers' own Qwen3VLModel, tiny and offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from operators.models import ModelError, ModelSpec
from operators.models.sv import Qwen3VLEmbedder, sv_embedder_for


@pytest.fixture(scope="module")
def full():
    e = sv_embedder_for("qwen3-vl-embedding-tiny", ModelSpec())
    e.load()
    return e


def _pages(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (256, 192, 3), dtype=np.uint8), rng.integers(0, 255, (128, 320, 3), dtype=np.uint8)]


def test_real_class_one_normalised_vector_per_page(full):
    from transformers import Qwen3VLModel

    assert isinstance(full.model, Qwen3VLModel) and full.dim == full.full_dim == 64
    v = full.embed_images(_pages())
    assert v.shape == (2, 64) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    alone = full.embed_images(_pages()[1:])[0]
    np.testing.assert_allclose(alone, v[1], atol=1e-5)  # a page does not depend on its batch
    assert not np.allclose(v[0], v[1])


def test_matryoshka_truncation_and_asymmetric_prompts(full):
    short = sv_embedder_for("qwen3-vl-embedding-tiny@16", ModelSpec())
    short.load()
    v_full, v_short = full.embed_images(_pages()), short.embed_images(_pages())
    head = v_full[:, :16] / np.linalg.norm(v_full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(v_short, head, atol=1e-5)
    q = full.embed_queries(["revenue by region", "a"])
    assert q.shape == (2, 64)
    # Queries and documents take different instructions: the same text differs between them.
    as_doc = full.embed_queries(["revenue by region"], instruction="Represent the user's input.")[0]
    assert not np.allclose(q[0], as_doc)
    with pytest.raises(ModelError, match="only 64 dimensions"):
        sv_embedder_for("qwen3-vl-embedding-tiny@128", ModelSpec()).dim  # noqa: B018
    with pytest.raises(ModelError, match="integer >= 8"):
        sv_embedder_for("qwen3-vl-embedding-tiny@x", ModelSpec())


def test_save_pretrained_then_load_from_local_dir(full, tmp_path):
    full.model.save_pretrained(tmp_path)
    full.processor.save_pretrained(tmp_path)
    loaded = sv_embedder_for(str(tmp_path), ModelSpec(weights="hub", dtype="float32"))
    assert loaded.full_dim == 64
    loaded.load()
    np.testing.assert_array_equal(full.embed_images(_pages(3)), loaded.embed_images(_pages(3)))
    np.testing.assert_array_equal(full.embed_queries(["q"]), loaded.embed_queries(["q"]))


def test_real_size_builds_offline_and_bad_specs():
    e = Qwen3VLEmbedder(ModelSpec(name="qwen3-vl-embedding-2b", weights="random"), 1024)
    assert e.dim == 1024 and e.full_dim == 2048
    with torch.device("meta"):
        model, _ = e._build_random()
    n = sum(p.numel() for p in model.parameters())
    assert 1.9e9 < n < 2.3e9  # Qwen3-VL-2B
    with pytest.raises(ModelError, match="needs a preset"):
        sv_embedder_for("someone/unknown", ModelSpec())
