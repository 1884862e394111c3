"""The ColQwen2 adapter on the real transformers class, tiny and offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from operators.models import ModelError, ModelSpec, adapter_for


@pytest.fixture(scope="module")
def tiny():
    a = adapter_for(ModelSpec(name="colqwen2-tiny", weights="random"))
    a.load()
    return a


@pytest.fixture(scope="module")
def tiny_colpali():
    a = adapter_for(ModelSpec(name="colpali-tiny", weights="random"))
    a.load()
    return a


def _pages(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (280, 252, 3), dtype=np.uint8), rng.integers(0, 255, (224, 336, 3), dtype=np.uint8)]


def test_real_class_and_output_shapes(tiny):
    from transformers import ColQwen2ForRetrieval
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    assert isinstance(tiny.model, ColQwen2ForRetrieval)
    assert isinstance(tiny.processor.image_processor, Qwen2VLImageProcessorPil)
    embs = tiny.embed_images(_pages())
    for emb, (h, w) in zip(embs, [(280, 252), (224, 336)]):
        assert emb.vectors.dtype == np.float32 and emb.vectors.shape[1] == 128
        # One vector per 28x28 merged patch, contiguous, plus the prompt tokens around them.
        assert emb.n_patches == (h // 28) * (w // 28) == emb.grid_h * emb.grid_w
        assert emb.vectors.shape[0] > emb.n_patches
        np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    q = tiny.embed_queries(["what is the revenue in 2023?"])[0]
    assert q.shape[1] == 128 and q.shape[0] > 5


def test_a_page_does_not_depend_on_its_batch(tiny):
    a, b = _pages(1)
    alone = tiny.embed_images([a])[0].vectors
    batched = tiny.embed_images([b, a])[1].vectors
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_save_pretrained_then_load_from_local_dir(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = adapter_for(ModelSpec(name=str(tmp_path), weights="hub", dtype="float32"))
    loaded.load()
    assert loaded.dim == 128 and loaded.pixel_budget().max_pixels == tiny.pixel_budget().max_pixels
    pages = _pages(2)
    for x, y in zip(tiny.embed_images(pages), loaded.embed_images(pages)):
        np.testing.assert_array_equal(x.vectors, y.vectors)
    np.testing.assert_array_equal(tiny.embed_queries(["q"])[0], loaded.embed_queries(["q"])[0])


def test_bad_specs_fail_with_a_clear_message(tmp_path):
    with pytest.raises(ModelError, match="preset"):
        adapter_for(ModelSpec(name="someone/unknown-model", weights="random"))
    with pytest.raises(ModelError, match="no published checkpoint"):
        adapter_for(ModelSpec(name="colqwen2-tiny", weights="hub"))
    with pytest.raises(ModelError, match="local directory"):
        adapter_for(ModelSpec(name=str(tmp_path), weights="hub")).load()


def test_real_size_architecture_builds_offline():
    """ColQwen2 v1.0 at real size with random weights: the calibration path (construct only)."""
    a = adapter_for(ModelSpec(name="colqwen2", weights="random"))
    assert a.pixel_budget().max_pixels == 28 * 28 * 768
    with torch.device("meta"):  # real shapes without 9 GB of fp32 weights
        model, _ = a._build_random()
    n = sum(p.numel() for p in model.parameters())
    assert 2.0e9 < n < 2.5e9  # Qwen2-VL-2B backbone + 128-d projection


def test_colpali_real_class_fixed_grid(tiny_colpali):
    from transformers import ColPaliForRetrieval
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    assert isinstance(tiny_colpali.model, ColPaliForRetrieval)
    assert isinstance(tiny_colpali.processor.image_processor, SiglipImageProcessorPil)
    for emb in tiny_colpali.embed_images(_pages()):  # pages of any size: the same 8 x 8 grid
        assert emb.patch_offset == 0 and emb.n_patches == 64 and (emb.grid_h, emb.grid_w) == (8, 8)
        assert emb.vectors.shape[1] == 128 and emb.vectors.shape[0] > 64
        np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    assert tiny_colpali.embed_queries(["a question"])[0].shape[1] == 128


def test_colpali_save_pretrained_then_load_from_local_dir(tiny_colpali, tmp_path):
    tiny_colpali.model.save_pretrained(tmp_path)
    tiny_colpali.processor.save_pretrained(tmp_path)
    loaded = adapter_for(ModelSpec(name=str(tmp_path), weights="hub", dtype="float32"))
    assert type(loaded).__name__ == "ColPaliAdapter"
    loaded.load()
    pages = _pages(4)
    for x, y in zip(tiny_colpali.embed_images(pages), loaded.embed_images(pages)):
        np.testing.assert_array_equal(x.vectors, y.vectors)
    np.testing.assert_array_equal(tiny_colpali.embed_queries(["q"])[0], loaded.embed_queries(["q"])[0])


def test_colpali_real_size_architecture_builds_offline():
    a = adapter_for(ModelSpec(name="colpali", weights="random"))
    assert a.visual_tokens(612, 792) == 1024  # 448 px / 14: the published 1024 patches
    with torch.device("meta"):
        model, processor = a._build_random()
    n = sum(p.numel() for p in model.parameters())
    assert 2.8e9 < n < 3.1e9  # PaliGemma-3B + the 128-d projection
    assert processor.image_processor.image_seq_length == 1024


def test_colqwen2_5_backbone_tiny_and_real_size(tmp_path):
    """ColQwen2.5: the same ColQwen2ForRetrieval class over a Qwen2.5-VL backbone."""
    a = adapter_for(ModelSpec(name="colqwen2.5-tiny", weights="random"))
    a.load()
    assert type(a.model.vlm).__name__ == "Qwen2_5_VLModel"
    embs = a.embed_images(_pages())
    for emb, (h, w) in zip(embs, [(280, 252), (224, 336)]):
        assert emb.vectors.shape[1] == 128 and emb.n_patches == (h // 28) * (w // 28)
        np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    a.model.save_pretrained(tmp_path)
    a.processor.save_pretrained(tmp_path)
    loaded = adapter_for(ModelSpec(name=str(tmp_path), weights="hub", dtype="float32"))
    loaded.load()
    assert type(loaded.model.vlm).__name__ == "Qwen2_5_VLModel"
    for x, y in zip(embs, loaded.embed_images(_pages())):
        np.testing.assert_array_equal(x.vectors, y.vectors)
    real = adapter_for(ModelSpec(name="colqwen2.5", weights="random"))
    with torch.device("meta"):
        model, _ = real._build_random()
    n = sum(p.numel() for p in model.parameters())
    assert 3.6e9 < n < 3.9e9  # Qwen2.5-VL-3B + the 128-d projection


def test_remote_code_needs_an_explicit_opt_in(tiny, tmp_path):
    import json

    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="--trust-remote-code"):
        adapter_for(ModelSpec(name=str(tmp_path), weights="hub")).load()
    trusted = adapter_for(ModelSpec(name=str(tmp_path), weights="hub", dtype="float32", trust_remote_code=True))
    trusted.load()  # the opt-in is passed on; our explicit class still decides the architecture
    np.testing.assert_array_equal(tiny.embed_queries(["q"])[0], trusted.embed_queries(["q"])[0])
    config["model_type"] = "jina_embeddings_v4"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="unsupported model_type 'jina_embeddings_v4'.*auto_map"):
        adapter_for(ModelSpec(name=str(tmp_path), weights="hub", trust_remote_code=True))


def test_colmodernvbert_real_class_tiles_and_round_trip(tmp_path):
    from transformers import ColModernVBertForRetrieval

    a = adapter_for(ModelSpec(name="colmodernvbert-tiny", weights="random"))
    a.load()
    assert isinstance(a.model, ColModernVBertForRetrieval)
    pages = _pages()
    embs = a.embed_images(pages)
    for emb, (h, w) in zip(embs, [(280, 252), (224, 336)]):
        # Tiles of 64 px (after a resize to a 128 px longest edge) plus a global view, 4 vectors each.
        assert emb.n_patches == a.visual_tokens(w, h) and emb.n_patches % 4 == 0 and emb.patch_offset == 0
        assert emb.vectors.shape[1] == 128 and emb.vectors.shape[0] > emb.n_patches
        np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    assert a.embed_queries(["a question"])[0].shape[1] == 128
    a.model.save_pretrained(tmp_path)
    a.processor.save_pretrained(tmp_path)
    loaded = adapter_for(ModelSpec(name=str(tmp_path), weights="hub", dtype="float32"))
    assert type(loaded).__name__ == "ColModernVBertAdapter"
    loaded.load()
    for x, y in zip(embs, loaded.embed_images(pages)):
        np.testing.assert_array_equal(x.vectors, y.vectors)
    np.testing.assert_array_equal(a.embed_queries(["q"])[0], loaded.embed_queries(["q"])[0])


def test_colmodernvbert_real_size_builds_offline():
    a = adapter_for(ModelSpec(name="colmodernvbert", weights="random"))
    assert a.visual_tokens(1700, 2200) == 64 * (4 * 4 + 1)  # to 1582 x 2048: 4 x 4 tiles of 512 + global
    with torch.device("meta"):
        model, processor = a._build_random()
    n = sum(p.numel() for p in model.parameters())
    assert 2.3e8 < n < 2.8e8  # ~250M: ModernBERT-base + SigLIP-base/16
    assert processor.image_seq_len == 64


def test_attention_auto_is_sdpa_without_cuda_or_flash_attn(tiny):
    from operators.models import resolve_attn

    assert tiny.effective_settings()["attn_implementation"] == "sdpa"
    assert resolve_attn("auto", "cpu") == "sdpa" and resolve_attn("eager", "cpu") == "eager"
    with pytest.raises(ModelError, match="unknown attention"):
        resolve_attn("flash3", "cpu")


def _corpus_page(budget) -> np.ndarray:
    """Page 1 of a real chart PDF from the shared corpus, rendered at the model's pixel budget."""
    import pymupdf
    from conftest import CORPUS, read_tsv

    from operators.render import target_size

    row = next(r for r in read_tsv("SMOKE.tsv") if r["category"] == "charts" and r["expectation"] == "ok")
    with pymupdf.open(CORPUS / row["file"]) as doc:
        page = doc[0]
        w, h = target_size(page.rect.width, page.rect.height, budget)
        pix = page.get_pixmap(matrix=pymupdf.Matrix(w / page.rect.width, h / page.rect.height), alpha=False)
        return np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.width, 3).copy()


@pytest.mark.parametrize("preset", ["colqwen2-tiny", "colqwen2.5-tiny", "colpali-tiny", "colmodernvbert-tiny"])
def test_every_architecture_embeds_a_rendered_corpus_page(preset):
    a = adapter_for(ModelSpec(name=preset, weights="random"))
    a.load()
    page = _corpus_page(a.pixel_budget())
    h, w, _ = page.shape
    assert w * h <= a.pixel_budget().max_pixels
    emb = a.embed_images([page])[0]
    assert emb.vectors.dtype == np.float32 and emb.vectors.ndim == 2 and emb.vectors.shape[1] == 128
    assert emb.n_patches == a.visual_tokens(w, h) > 0 and emb.vectors.shape[0] > emb.n_patches
    assert emb.grid_h * emb.grid_w == emb.n_patches
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-4)


def test_the_single_vector_model_embeds_a_rendered_corpus_page():
    from operators.models.sv import sv_embedder_for

    e = sv_embedder_for("qwen3-vl-embedding-tiny", ModelSpec())
    e.load()
    v = e.embed_images([_corpus_page(e.pixel_budget())])
    assert v.shape == (1, 64) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_a_checkpoints_pixel_budget_is_decided_once_before_rendering(tiny, tmp_path):
    """A checkpoint whose processor has another budget than the preset: the driver decides it
    from the checkpoint's preprocessor_config.json before any page is rendered, and the adapter
    that embeds keeps exactly that budget (no page rendered at one size and resized to another)."""
    import json

    from operators.models import decide_budget
    from operators.render import target_size

    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    # transformers 5 saves the image processor's settings in processor_config.json
    conf_path = tmp_path / "processor_config.json"
    conf = json.loads(conf_path.read_text())
    budget = 28 * 28 * 48  # half the preset's 96 visual tokens
    conf["image_processor"]["size"] = {**conf["image_processor"]["size"], "longest_edge": budget}
    conf_path.write_text(json.dumps(conf))
    asked = ModelSpec(name=str(tmp_path), weights="hub", dtype="float32")
    decided = decide_budget(asked)
    assert decided.max_pixels == budget and asked.max_pixels is None
    render_budget = adapter_for(decided).pixel_budget()  # what the driver gives the render stage: nothing loaded
    assert render_budget.max_pixels == budget
    embedder = adapter_for(decided)
    embedder.load()
    assert embedder.pixel_budget().max_pixels == budget == embedder.processor.image_processor.size["longest_edge"]
    # A page rendered at that budget goes through the processor unresized: one vector per 28 px patch.
    w, h = target_size(1700, 2200, render_budget)
    page = np.random.default_rng(3).integers(0, 255, (h, w, 3), dtype=np.uint8)
    emb = embedder.embed_images([page])[0]
    assert emb.n_patches == (h // 28) * (w // 28) <= 48
