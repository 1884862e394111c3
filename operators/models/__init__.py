"""Models: adapters in front of ``transformers``' own retrieval classes, one per family.

- ``spec``: what ``--model`` names (presets, ``text:``/``sv:`` parts, family, pixel budget);
- ``family``: each family described once (budget rules, tokens, vectors besides the patches);
- ``base``: the adapter interface and what the ``transformers`` adapters share;
- ``colqwen2``, ``colpali``, ``colmodernvbert``: one adapter per family;
- ``offline_tokenizers``: the random-weight presets' tokenizers, built offline.

>>> adapter = adapter_for(ModelSpec("colqwen2-tiny"))   # loads nothing until the first page
>>> adapter.dim, adapter.pixel_budget().max_pixels
(128, 75264)
"""

from __future__ import annotations

from operators.models.adapters import ADAPTERS
from operators.models.base import (
    ATTN_CHOICES,
    MultiVectorAdapter,
    PageEmbedding,
    TransformersAdapter,
    build_or_load,
    load_once,
    quiet_transformers,
    random_model,
    resolve_attn,
    resolve_device,
    resolve_dtype,
)
from operators.models.colmodernvbert import ColModernVBertAdapter
from operators.models.colpali import ColPaliAdapter
from operators.models.colqwen2 import ColQwen2Adapter
from operators.models.family import FAMILIES, Family, decide_budget
from operators.models.offline_tokenizers import byte_level_qwen2_tokenizer, byte_level_tokenizer
from operators.models.spec import (
    PRESETS,
    SV_PREFIX,
    TEXT_PREFIX,
    WEIGHTS_HUB,
    WEIGHTS_RANDOM,
    ModelError,
    ModelSpec,
    family_of,
    preprocessor_config,
    split_model_specs,
    sv_model_spec,
)


def adapter_for(spec: ModelSpec) -> MultiVectorAdapter:
    """The adapter for a spec: ColQwen2 (Qwen2-VL), ColPali (PaliGemma), ColModernVBERT
    checkpoints, or the simulated accelerator (``sim:<preset>[@<pages per s>]``)."""
    family = family_of(spec)
    if family == "sim":
        from operators.models.sim import SimAdapter

        return SimAdapter(spec)
    return ADAPTERS[family](spec)


__all__ = [
    "ATTN_CHOICES", "FAMILIES", "PRESETS", "SV_PREFIX", "TEXT_PREFIX", "WEIGHTS_HUB", "WEIGHTS_RANDOM",
    "ColModernVBertAdapter", "ColPaliAdapter", "ColQwen2Adapter", "Family", "ModelError", "ModelSpec", "MultiVectorAdapter",
    "PageEmbedding", "TransformersAdapter", "adapter_for", "build_or_load", "byte_level_qwen2_tokenizer",
    "byte_level_tokenizer", "decide_budget", "family_of", "load_once", "preprocessor_config", "quiet_transformers",
    "random_model", "resolve_attn", "resolve_device", "resolve_dtype", "split_model_specs", "sv_model_spec",
]
