"""The adapter interface in front of ``transformers``' own retrieval classes, and what every
adapter over them shares: loading (a checkpoint, or the real class at a preset's size with random
weights), the forward pass, and turning its output into one multi-vector per page.

An adapter knows how to load its model, what pixel budget the renderer should aim for, and how
to turn page images into multi-vectors and queries into query vectors. One subclass per family:
operators/models/colqwen2.py, colpali.py, colmodernvbert.py (and sim.py, the simulated one).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from operators.models.family import FAMILIES
from operators.models.spec import PRESETS, WEIGHTS_HUB, WEIGHTS_RANDOM, ModelError, ModelSpec
from operators.render import PixelBudget


@dataclass
class PageEmbedding:
    """One page's multi-vector and where its image patches sit in it."""

    vectors: np.ndarray  # (n_vectors, dim) float32, L2-normalised rows
    patch_offset: int  # index of the first image-patch vector
    n_patches: int
    grid_h: int  # patch rows after the spatial merge
    grid_w: int

    def patch_vectors(self) -> np.ndarray:
        return self.vectors[self.patch_offset : self.patch_offset + self.n_patches]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)") from None


ATTN_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2")


def resolve_attn(attn: str, device: str) -> str:
    """``auto``: FlashAttention-2 on a CUDA device when the flash-attn package is installed, else
    PyTorch's scaled-dot-product attention."""
    import importlib.util

    if attn not in ATTN_CHOICES:
        raise ModelError(f"unknown attention implementation {attn!r} (use {', '.join(ATTN_CHOICES)})")
    if attn != "auto":
        return attn
    return "flash_attention_2" if device.startswith("cuda") and importlib.util.find_spec("flash_attn") else "sdpa"


class MultiVectorAdapter:
    """Interface of a multi-vector page embedder."""

    name: str
    dim: int

    family = None  # operators/models/family.py: its budget rules, tokens and grid

    def pixel_budget(self) -> PixelBudget:
        return self.family.pixel_budget(self.spec)

    def load(self) -> None:
        raise NotImplementedError

    def embed_images(self, images: list[np.ndarray], keys: list[str] | None = None) -> list[PageEmbedding]:
        """One multi-vector per (H, W, 3) uint8 image; ``keys`` (the page ids) matter only to
        stand-ins that must be deterministic per page (``sim:``)."""
        raise NotImplementedError

    def visual_tokens(self, width: int, height: int) -> int:
        """Tokens a page of this size costs in a forward pass (for batching by budget)."""
        return self.family.visual_tokens(self.spec, width, height)

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def effective_settings(self) -> dict:
        return {}


class TransformersAdapter(MultiVectorAdapter):
    """A ``transformers`` ``*ForRetrieval`` model and its processor. Subclasses name their family
    (``family_name``: its budget and tokens) and their classes (``_classes``), build a random
    model at a preset's size (``_build_random``), and say where a page's patches are (``_grid``,
    ``_page_embedding``)."""

    family_name: str

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.family = FAMILIES[self.family_name]
        preset = PRESETS.get(spec.name)
        self._preset = preset
        if preset is None and spec.weights == WEIGHTS_RANDOM:
            raise ModelError(
                f"--weights random needs a known architecture preset, not {spec.name!r} "
                f"(presets: {', '.join(sorted(PRESETS))}); use --weights hub for a checkpoint"
            )
        if preset is not None and spec.weights == WEIGHTS_HUB and not preset["hub_id"]:
            raise ModelError(f"preset {spec.name!r} has no published checkpoint: use --weights random, or give the "
                             f"hub id or folder of a transformers-format checkpoint as --model")
        self.name = spec.name
        self.dim = preset["embedding_dim"] if preset else int(spec.extra.get("embedding_dim", 128))
        self.model = None
        self.processor = None
        self.device = None
        self.torch_dtype = None
        self.forward_s = 0.0

    # -- loading -----------------------------------------------------------------------------

    def _classes(self) -> tuple:
        """(the ``*ForRetrieval`` model class, its processor class)."""
        raise NotImplementedError

    def _build_random(self) -> tuple:
        """(model, processor): the real classes at the preset's size, random weights, offline."""
        raise NotImplementedError

    def _after_load(self, model, processor) -> None:
        """Read what the checkpoint decided (its processor's sizes) into the adapter."""

    def _loaded(self) -> None:
        """After the model and processor are in place (once per actor)."""

    def _hub_source(self) -> str:
        if self._preset is not None:
            return self._preset["hub_id"]
        return self.spec.name

    def _load_pretrained(self):
        model_cls, processor_cls = self._classes()
        src = self._hub_source()
        refuse_remote_code(self.spec)
        trust = {"trust_remote_code": True} if self.spec.trust_remote_code else {}
        try:
            processor = processor_cls.from_pretrained(src, **trust)
            model = model_cls.from_pretrained(
                src, dtype=self.torch_dtype, attn_implementation=self.spec.attn_implementation, **trust
            )
        except ValueError as e:
            if "trust_remote_code" in str(e):
                raise ModelError(f"{src} ships its own Python code: pass --trust-remote-code to run it (only for "
                                 f"checkpoints you trust)") from None
            raise
        except OSError as e:
            where = "local directory" if os.path.isdir(src) else "hub id"
            raise ModelError(f"cannot load {model_cls.__name__} from {where} {src!r}: {str(e).splitlines()[0]}") from None
        self.dim = int(model.config.embedding_dim)
        self._after_load(model, processor)
        return model, processor

    def load(self) -> None:
        if not load_once(self):
            return
        self._image_token_id = int(getattr(self.processor, "image_token_id", None)
                                   or self.model.config.vlm_config.image_token_id)
        self._loaded()

    def effective_settings(self) -> dict:
        return {
            "model": self.name,
            "weights": self.spec.weights,
            "device": self.device,
            "dtype": str(self.torch_dtype).replace("torch.", ""),
            "attn_implementation": self.spec.attn_implementation,
            "max_pixels": self.pixel_budget().max_pixels,
            "dim": self.dim,
        }

    # -- embedding ---------------------------------------------------------------------------

    def embed_images(self, images: list[np.ndarray], keys: list[str] | None = None) -> list[PageEmbedding]:
        """``images``: (H, W, 3) uint8 arrays. Returns one multi-vector per image."""
        import torch
        from PIL import Image

        self.load()
        pil = [Image.fromarray(im, mode="RGB") for im in images]
        inputs = self.processor.process_images(images=pil).to(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            emb = self.model(**self._model_inputs(inputs)).embeddings
        emb = emb.float().cpu().numpy()
        self.forward_s += time.perf_counter() - t0
        mask = inputs["attention_mask"].bool().cpu().numpy()
        ids = inputs["input_ids"].cpu().numpy()
        out = []
        for i in range(len(images)):
            keep = mask[i]
            vectors = emb[i][keep]
            is_patch = ids[i][keep] == self._image_token_id
            out.append(self._page_embedding(vectors, is_patch, inputs, i))
        return out

    def _page_embedding(self, vectors: np.ndarray, is_patch: np.ndarray, inputs, i: int) -> PageEmbedding:
        """The patch vectors are contiguous in Qwen2-VL's and PaliGemma's sequences."""
        positions = np.flatnonzero(is_patch)
        gh, gw = self._grid(inputs, i, len(positions))
        return PageEmbedding(vectors=vectors, patch_offset=int(positions[0]) if len(positions) else 0,
                             n_patches=int(len(positions)), grid_h=gh, grid_w=gw)

    def _model_inputs(self, inputs) -> dict:
        return dict(inputs)

    def _grid(self, inputs, i: int, n_patches: int) -> tuple[int, int]:
        """(rows, columns) of the page's patch grid."""
        raise NotImplementedError

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        import torch

        self.load()
        inputs = self.processor.process_queries(text=queries).to(self.device)
        with torch.inference_mode():
            emb = self.model(**self._model_inputs(inputs)).embeddings.float().cpu().numpy()
        mask = inputs["attention_mask"].bool().cpu().numpy()
        return [emb[i][mask[i]] for i in range(len(queries))]


def random_model(spec: ModelSpec, model_cls, config):
    """The real class at the config's size, randomly initialised from the spec's seed."""
    import torch

    config._attn_implementation = resolve_attn(spec.attn_implementation, "cpu")  # resolved for the device by load
    torch.manual_seed(spec.seed)
    return model_cls(config)


def load_once(adapter) -> bool:
    """Load the adapter's model and processor unless it has them (once per actor, not per
    batch); True when it loaded now."""
    if adapter.model is not None:
        return False
    model, processor = build_or_load(adapter)
    adapter.model = model.to(adapter.device).eval()
    adapter.processor = processor
    return True


def quiet_transformers() -> None:
    """No "Loading weights" bars or advisory warnings from transformers: pagemill reports what
    it loads itself, and bars with ANSI codes make logs unreadable."""
    from transformers.utils import logging as tf_logging

    tf_logging.disable_progress_bar()
    tf_logging.set_verbosity_error()


def build_or_load(adapter) -> tuple:
    """Device and dtype from the adapter's spec, then (model, processor): built from the preset
    with random weights, or loaded from the checkpoint."""
    quiet_transformers()
    adapter.device = resolve_device(adapter.spec.device)
    adapter.torch_dtype = resolve_dtype(adapter.spec.dtype, adapter.device)
    adapter.spec = dataclasses.replace(adapter.spec,
                                       attn_implementation=resolve_attn(adapter.spec.attn_implementation, adapter.device))
    if adapter.spec.weights == WEIGHTS_RANDOM:
        model, processor = adapter._build_random()
        return model.to(adapter.torch_dtype), processor
    if adapter.spec.weights == WEIGHTS_HUB:
        return adapter._load_pretrained()
    raise ModelError(f"unknown weights mode {adapter.spec.weights!r} (use hub or random)")


def refuse_remote_code(spec: ModelSpec) -> None:
    """A local checkpoint whose config maps classes to its own modules (``auto_map``) runs code
    from the checkpoint: refused unless the user opted in."""
    config = os.path.join(spec.name, "config.json")
    if spec.trust_remote_code or not os.path.isfile(config):
        return
    with open(config) as f:
        if json.load(f).get("auto_map"):
            raise ModelError(f"{spec.name} ships its own Python code (auto_map in config.json): pass "
                             f"--trust-remote-code to run it (only for checkpoints you trust)")
