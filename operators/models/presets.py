"""The model presets ``--model`` names, and the models ``pagemill plan`` knows beside them: one
table. A runnable preset is a real architecture's configuration (built offline with random
weights, or loaded from its ``hub_id``) of a family (operators/models/family.py); a plan-only
entry gives the vector shape its model card publishes.
"""

from __future__ import annotations

# Real-size configurations, so that --weights random needs no download.
_QWEN2_VL_2B_TEXT = dict(
    vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
    num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
    tie_word_embeddings=True,
)
_QWEN2_VL_2B_VISION = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)

# ColQwen2.5 (v0.2) is built on Qwen2.5-VL-3B: windowed attention in the vision tower, full
# attention every 8th block, a projection to the text width.
_QWEN25_VL_3B_TEXT = dict(
    vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
    num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
    rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
    tie_word_embeddings=True,
)
_QWEN25_VL_3B_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                            fullatt_block_indexes=[7, 15, 23, 31], window_size=112)

_PALIGEMMA_3B_VISION = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                            num_hidden_layers=27, num_attention_heads=16, image_size=448, patch_size=14,
                            projection_dim=2048)
_PALIGEMMA_3B_TEXT = dict(model_type="gemma", vocab_size=257216, hidden_size=2048, intermediate_size=16384,
                          num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1, head_dim=256)

PRESETS: dict[str, dict] = {
    "colqwen2-tiny": dict(
        text=dict(vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                  rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]}),
        vision=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
        embedding_dim=128,
        max_pixels=28 * 28 * 96,  # 96 visual tokens per page
        hub_id=None,
    ),
    "colqwen2": dict(
        text=_QWEN2_VL_2B_TEXT, vision=_QWEN2_VL_2B_VISION, embedding_dim=128,
        max_pixels=28 * 28 * 768,  # ColQwen2 v1.0's budget: 768 visual tokens
        hub_id="vidore/colqwen2-v1.0-hf",
        plan=dict(vectors_per_page=750, dim=128, dtype="bf16",
                  note="Qwen2-VL at the 768-visual-token budget: ~730 patches + prompt tokens"),
    ),
    "colqwen2.5-tiny": dict(
        backbone="qwen2_5_vl",
        text=dict(vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                  rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]}),
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                    fullatt_block_indexes=[1], window_size=112),
        embedding_dim=128, max_pixels=28 * 28 * 96, hub_id=None,
    ),
    "colqwen2.5": dict(
        backbone="qwen2_5_vl", text=_QWEN25_VL_3B_TEXT, vision=_QWEN25_VL_3B_VISION, embedding_dim=128,
        max_pixels=28 * 28 * 768,
        # No transformers-format ColQwen2.5 checkpoint is published under vidore/ yet: pass the
        # hub id or folder of one (model_type colqwen2 with a qwen2_5_vl vlm_config) instead.
        hub_id=None,
        plan=dict(vectors_per_page=750, dim=128, dtype="bf16", note="as colqwen2 (Qwen2.5-VL backbone)"),
    ),
    "colmodernvbert-tiny": dict(
        family="colmodernvbert",
        text=dict(model_type="modernbert", vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4),
        vision=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, image_size=64, patch_size=8),
        pixel_shuffle_factor=4, longest_edge=128, embedding_dim=128, hub_id=None,
    ),
    # ColModernVBERT (ModernVBERT: ModernBERT-base + SigLIP2-base/16 at 512 px, ~250M): pages are
    # split into 512 px tiles plus a global view, 64 vectors each after the pixel shuffle.
    "colmodernvbert": dict(
        family="colmodernvbert",
        text=dict(model_type="modernbert", vocab_size=50368, hidden_size=768, intermediate_size=1152,
                  num_hidden_layers=22, num_attention_heads=12),
        vision=dict(model_type="siglip_vision_model", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, image_size=512, patch_size=16),
        pixel_shuffle_factor=4, longest_edge=2048, embedding_dim=128, hub_id="ModernVBERT/colmodernvbert-merged",
        plan=dict(vectors_per_page=850, dim=128, dtype="bf16",
                  note="approximate: 64 tokens per 512px tile, ~13 tiles per page"),
    ),
    "colpali-tiny": dict(
        family="colpali",
        vision=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, image_size=112, patch_size=14, projection_dim=64),
        text=dict(model_type="gemma", vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=32),
        embedding_dim=128, hub_id=None,
    ),
    "colpali": dict(
        family="colpali", vision=_PALIGEMMA_3B_VISION, text=_PALIGEMMA_3B_TEXT, embedding_dim=128,
        hub_id="vidore/colpali-v1.3-hf",  # 448 px: 32 x 32 = 1024 patch vectors + the prompt
        plan=dict(vectors_per_page=1030, dim=128, dtype="bf16", note="PaliGemma 448px: 1024 patches (32x32) + 6 prompt tokens"),
    ),
}

# Models pagemill plans for but does not run (figures from the model cards and papers; pages
# differ, so calibrate on your own corpus with `pagemill report`).
PLAN_ONLY: dict[str, dict] = {
    "nemoretriever-colembed-3b": dict(vectors_per_page=1750, dim=3072, dtype="bf16", special=20,
                                      note="3072-dim tokens, ~1,700-1,800 per page"),
    "jina-embeddings-v4": dict(vectors_per_page=1, dim=2048, dtype="bf16", single=True,
                               note="single-vector mode (a 128-d multi-vector mode exists too)"),
    "qwen3-vl-embedding-2b": dict(vectors_per_page=1, dim=2048, dtype="bf16", single=True,
                                  note="Matryoshka: 64-2048 dims"),
    "qwen3-vl-embedding-8b": dict(vectors_per_page=1, dim=4096, dtype="bf16", single=True,
                                  note="Matryoshka: 64-4096 dims"),
    "llama-nemotron-embed-vl-1b-v2": dict(vectors_per_page=1, dim=2048, dtype="bf16", single=True,
                                          note="single vector per page"),
}
