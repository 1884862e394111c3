"""What a ``--model`` option names: the visual model's spec (a preset, a hub id or a folder), the
optional ``text:`` and ``sv:`` models beside it, and what is known about a model before loading
it (its family, its checkpoint's preprocessor settings, the pixel budget).

Spec strings (``--model``):

- ``colqwen2-tiny``: a few-layer ColQwen2 (real class, random weights, offline tokenizer) for
  demos and tests; a page embeds in milliseconds on a CPU.
- ``colqwen2``: the real ColQwen2 v1.0 architecture (Qwen2-VL-2B backbone); with ``--weights
  random`` it is built offline at real size (for calibration), with ``--weights hub`` it is
  ``vidore/colqwen2-v1.0-hf``.
- any hub id or local directory holding a ColQwen2, ColPali or ColModernVBERT checkpoint, with
  ``--weights hub``.
- ``sim:<preset>[@<pages per s>]``: the simulated accelerator (operators/models/sim.py).
- ``,text:<model>`` adds the text layer's model, ``,sv:<model>`` a single-vector VLM embedder:
  ``colqwen2,text:all-MiniLM-L6-v2,sv:qwen3-vl-embedding-2b``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

WEIGHTS_HUB = "hub"
WEIGHTS_RANDOM = "random"
TEXT_PREFIX = "text:"
SV_PREFIX = "sv:"


class ModelError(Exception):
    """The model spec cannot be resolved or loaded; the message says what to do."""


@dataclass
class ModelSpec:
    """What the user asked for; cheap and picklable (actors receive it and load the model)."""

    name: str = "colqwen2-tiny"
    weights: str = WEIGHTS_RANDOM
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    attn_implementation: str = "auto"  # auto: flash_attention_2 on CUDA when flash-attn is installed, else sdpa
    max_pixels: int | None = None  # override the preset's pixel budget
    seed: int = 0
    trust_remote_code: bool = False  # run Python code shipped with a checkpoint: only on the user's explicit opt-in
    extra: dict = field(default_factory=dict)


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
    ),
}


def split_model_specs(spec: str) -> tuple[str, str | None]:
    """``"colqwen2,text:all-MiniLM-L6-v2"`` -> (visual spec, text model name or None)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    visual = [p for p in parts if not p.startswith((TEXT_PREFIX, SV_PREFIX))]
    text = [p[len(TEXT_PREFIX):] for p in parts if p.startswith(TEXT_PREFIX)]
    if len(visual) != 1:
        raise ModelError(f"--model {spec!r}: give exactly one multi-vector page-image model (plus optionally "
                         f"text:<model> and sv:<model>)")
    if sum(p.startswith(SV_PREFIX) for p in parts) > 1:
        raise ModelError(f"--model {spec!r}: at most one sv:<model>")
    if len(text) > 1:
        raise ModelError(f"--model {spec!r}: at most one text:<model>")
    return visual[0], (text[0] if text else None)


def sv_model_spec(spec: str) -> str | None:
    """``"colqwen2,sv:qwen3-vl-embedding-2b@1024"`` -> ``"qwen3-vl-embedding-2b@1024"``."""
    found = [p.strip()[len(SV_PREFIX):] for p in spec.split(",") if p.strip().startswith(SV_PREFIX)]
    return found[0] if found else None


def family_of(spec: ModelSpec) -> str:
    """colqwen2 or colpali, from the preset, a local checkpoint's config.json, or the hub id."""
    if spec.name.startswith("sim:"):
        return "sim"
    if spec.name in PRESETS:
        return PRESETS[spec.name].get("family", "colqwen2")
    config = os.path.join(spec.name, "config.json")
    if os.path.isfile(config):
        conf = json.loads(open(config).read())
        model_type = conf.get("model_type", "")
        if model_type in ("colpali", "colqwen2", "colmodernvbert"):
            return model_type
        hint = " (its auto_map points at its own code; those architectures are not supported)" if conf.get("auto_map") else ""
        raise ModelError(f"{spec.name}: unsupported model_type {model_type!r}{hint} (supported: colqwen2 (Qwen2-VL, "
                         f"Qwen2.5-VL), colpali)")
    lowered = spec.name.lower()
    return "colpali" if "colpali" in lowered else ("colmodernvbert" if "modernvbert" in lowered else "colqwen2")


def preprocessor_config(spec: ModelSpec) -> dict | None:
    """The checkpoint's image-processor settings (a local folder, or the Hugging Face cache),
    without loading anything: ``preprocessor_config.json``, or the ``image_processor`` section of
    ``processor_config.json`` (where transformers 5 saves it); None for presets with random
    weights or when neither is at hand."""
    if spec.weights != WEIGHTS_HUB or spec.name.startswith("sim:"):
        return None
    name = PRESETS[spec.name]["hub_id"] if spec.name in PRESETS else spec.name
    for filename, section in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = _checkpoint_file(name, filename)
        if path is None:
            continue
        with open(path) as f:
            conf = json.load(f)
        conf = conf.get(section) if section else conf
        if isinstance(conf, dict):
            return conf
    return None


def _checkpoint_file(name: str, filename: str) -> str | None:
    """A file of a checkpoint: in its folder, or in the Hugging Face cache (no download)."""
    path = os.path.join(name, filename)
    if os.path.isfile(path):
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, filename)
    except Exception:
        return None
    return cached if isinstance(cached, str) else None


def decide_budget(spec: ModelSpec) -> ModelSpec:
    """The pixel budget, decided once, in the driver, before any page is rendered: the user's
    ``--max-pixels``, else the checkpoint's processor (its ``max_pixels`` or longest edge), else
    the preset's. The embedding actors then use exactly this budget (the processor is told it),
    so no page is rendered at one size and resized to another."""
    if spec.max_pixels:
        return spec
    conf = preprocessor_config(spec)
    if not conf:
        return spec
    family = family_of(spec)
    size = conf.get("size") or {}
    if family == "colqwen2":
        budget = conf.get("max_pixels") or size.get("longest_edge")
        return dataclasses.replace(spec, max_pixels=int(budget)) if budget else spec
    if family == "colpali":
        side = size.get("height") or conf.get("image_size")
        if side:
            return dataclasses.replace(spec, extra={**spec.extra, "image_size": int(side)})
    if family == "colmodernvbert" and size.get("longest_edge"):
        tile = (conf.get("max_image_size") or {}).get("longest_edge", 512)
        return dataclasses.replace(spec, extra={**spec.extra, "longest_edge": int(size["longest_edge"]), "tile": int(tile)})
    return spec
