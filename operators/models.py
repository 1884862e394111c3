"""Model adapters: one small interface in front of ``transformers``' own retrieval classes.

An adapter knows how to load its model (hub id, local directory, or random weights built from a
config), what pixel budget the renderer should aim for, and how to turn page images into
multi-vectors and queries into query vectors.

Spec strings (``--model``):

- ``colqwen2-tiny``: a few-layer ColQwen2 (real class, random weights, offline tokenizer) for
  demos and tests; a page embeds in milliseconds on a CPU.
- ``colqwen2``: the real ColQwen2 v1.0 architecture (Qwen2-VL-2B backbone); with ``--weights
  random`` it is built offline at real size (for calibration), with ``--weights hub`` it is
  ``vidore/colqwen2-v1.0-hf``.
- any hub id or local directory holding a ColQwen2 checkpoint, with ``--weights hub``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from operators.render import PixelBudget

WEIGHTS_HUB = "hub"
WEIGHTS_RANDOM = "random"

QWEN2_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


class ModelError(Exception):
    """The model spec cannot be resolved or loaded; the message says what to do."""


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


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-to-symbol table in byte order (0..255): a fixed vocabulary order.

    (``ByteLevel.alphabet()`` returns the same symbols in hash order, different per process.)
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def byte_level_qwen2_tokenizer():
    """A Qwen2 tokenizer over a 256-symbol byte-level vocabulary plus Qwen2-VL's special tokens.

    Built offline with the ``tokenizers`` library. With random weights, what matters is that
    the token sequence has the real structure (prompt, vision start, image pads, vision end).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode())}
    assert set(vocab) == set(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(QWEN2_SPECIAL_TOKENS)
    return Qwen2TokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>")


class MultiVectorAdapter:
    """Interface of a multi-vector page embedder."""

    name: str
    dim: int

    def pixel_budget(self) -> PixelBudget:
        raise NotImplementedError

    def load(self) -> None:
        raise NotImplementedError

    def embed_images(self, images: list[np.ndarray], keys: list[str] | None = None) -> list[PageEmbedding]:
        """One multi-vector per (H, W, 3) uint8 image; ``keys`` (the page ids) matter only to
        stand-ins that must be deterministic per page (``sim:``)."""
        raise NotImplementedError

    def visual_tokens(self, width: int, height: int) -> int:
        """Tokens a page of this size costs in a forward pass (for batching by budget)."""
        return max(1, width * height // (28 * 28))

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        raise NotImplementedError

    def effective_settings(self) -> dict:
        return {}


class ColQwen2Adapter(MultiVectorAdapter):
    """``ColQwen2ForRetrieval`` + ``ColQwen2Processor`` (PIL image processor)."""

    def __init__(self, spec: ModelSpec):
        self.spec = spec
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
        self._max_pixels = spec.max_pixels or ((preset or {}).get("max_pixels") or 28 * 28 * 768)
        self.model = None
        self.processor = None
        self.device = None
        self.torch_dtype = None
        self.forward_s = 0.0

    def pixel_budget(self) -> PixelBudget:
        # Sides a multiple of patch (14) x merge (2): the processor then keeps our size as is.
        return PixelBudget(max_pixels=self._max_pixels, multiple=28, min_side=56)

    # -- loading -----------------------------------------------------------------------------

    def _hub_source(self) -> str:
        if self._preset is not None:
            return self._preset["hub_id"]
        return self.spec.name

    def _build_random(self):
        from transformers import (
            ColQwen2Config,
            ColQwen2ForRetrieval,
            ColQwen2Processor,
            Qwen2_5_VLConfig,
            Qwen2VLConfig,
        )
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tokenizer = byte_level_qwen2_tokenizer()
        image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=self._max_pixels)
        processor = ColQwen2Processor(image_processor=image_processor, tokenizer=tokenizer)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_SPECIAL_TOKENS}
        text = dict(self._preset["text"])
        text["vocab_size"] = text["vocab_size"] or len(tokenizer)
        text.update(bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
        vlm_cls = Qwen2_5_VLConfig if self._preset.get("backbone") == "qwen2_5_vl" else Qwen2VLConfig
        vlm = vlm_cls(
            text_config=text,
            vision_config=self._preset["vision"],
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
        )
        config = ColQwen2Config(vlm_config=vlm, embedding_dim=self._preset["embedding_dim"])
        return random_model(self.spec, ColQwen2ForRetrieval, config), processor

    def _classes(self):
        from transformers import ColQwen2ForRetrieval, ColQwen2Processor

        return ColQwen2ForRetrieval, ColQwen2Processor

    def _load_pretrained(self):
        model_cls, processor_cls = self._classes()
        src = self._hub_source()
        _refuse_remote_code(self.spec)
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

    def _after_load(self, model, processor) -> None:
        ip = processor.image_processor
        if self.spec.max_pixels:
            ip.max_pixels = self.spec.max_pixels
            ip.size = {"shortest_edge": ip.size["shortest_edge"], "longest_edge": self.spec.max_pixels}
        else:
            self._max_pixels = int(ip.size["longest_edge"])

    def load(self) -> None:
        if not load_once(self):
            return
        self._image_token_id = int(getattr(self.processor, "image_token_id", None)
                                   or self.model.config.vlm_config.image_token_id)
        self._merge = int(getattr(self.processor.image_processor, "merge_size", 2))

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
        _, gh, gw = (int(x) for x in inputs["image_grid_thw"][i])
        return gh // self._merge, gw // self._merge

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
    adapter.spec.attn_implementation = resolve_attn(adapter.spec.attn_implementation, adapter.device)
    if adapter.spec.weights == WEIGHTS_RANDOM:
        model, processor = adapter._build_random()
        return model.to(adapter.torch_dtype), processor
    if adapter.spec.weights == WEIGHTS_HUB:
        return adapter._load_pretrained()
    raise ModelError(f"unknown weights mode {adapter.spec.weights!r} (use hub or random)")


def byte_level_tokenizer(specials: list[str], **named):
    """A generic fast tokenizer over the byte-level alphabet plus ``specials`` (offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


class ColPaliAdapter(ColQwen2Adapter):
    """``ColPaliForRetrieval`` (PaliGemma: SigLIP + Gemma) + ``ColPaliProcessor`` (PIL SigLIP
    processor). Pages are resized to a fixed square (448 px for ColPali v1.x): a fixed grid of
    ``(image_size / 14)^2`` patch vectors (1024) before the prompt tokens."""

    def pixel_budget(self) -> PixelBudget:
        side = self._image_size()
        # Render about as many pixels as the model sees; the processor then squares the page.
        return PixelBudget(max_pixels=self.spec.max_pixels or side * side, multiple=1, min_side=14)

    def _image_size(self) -> int:
        if self._preset is not None:
            return int(self._preset["vision"]["image_size"])
        return int(self.spec.extra.get("image_size", 448))

    def visual_tokens(self, width: int, height: int) -> int:
        return (self._image_size() // 14) ** 2  # fixed grid, whatever the page size

    def _build_random(self):
        from transformers import ColPaliConfig, ColPaliForRetrieval, ColPaliProcessor, PaliGemmaConfig
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        tokenizer = byte_level_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], bos_token="<bos>",
                                         eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
        side = self._image_size()
        image_processor = SiglipImageProcessorPil(size={"height": side, "width": side}, image_mean=[0.5] * 3,
                                                  image_std=[0.5] * 3)
        image_processor.image_seq_length = (side // 14) ** 2
        processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
        text = dict(self._preset["text"])
        text["vocab_size"] = text["vocab_size"] or len(tokenizer)
        vlm = PaliGemmaConfig(vision_config=self._preset["vision"], text_config=text,
                              image_token_id=processor.image_token_id,
                              projection_dim=self._preset["vision"]["projection_dim"])
        config = ColPaliConfig(vlm_config=vlm, embedding_dim=self._preset["embedding_dim"])
        return random_model(self.spec, ColPaliForRetrieval, config), processor

    def _classes(self):
        from transformers import ColPaliForRetrieval, ColPaliProcessor

        return ColPaliForRetrieval, ColPaliProcessor

    def _after_load(self, model, processor) -> None:
        size = processor.image_processor.size
        self.spec.extra["image_size"] = int(size["height"])

    def _grid(self, inputs, i: int, n_patches: int) -> tuple[int, int]:
        side = int(round(n_patches ** 0.5))
        return side, side

    def _model_inputs(self, inputs) -> dict:
        return {k: v for k, v in inputs.items() if k not in ("labels", "token_type_ids")}


MODERNVBERT_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<pad>", "<unk>", "<fake_token_around_image>", "<image>",
                        "<end_of_utterance>", "<global-img>"] + [f"<row_{i + 1}_col_{j + 1}>" for i in range(6)
                                                                 for j in range(6)]


class ColModernVBertAdapter(ColQwen2Adapter):
    """``ColModernVBertForRetrieval`` (ModernBERT + SigLIP, bidirectional) + its processor (the
    Idefics3 PIL image processor: a page becomes tiles of the vision tower's size plus a global
    view). The image-token vectors are not contiguous (tile tags sit between tiles), so each
    page's vectors are reordered image tokens first: MaxSim does not depend on order, and the
    patches then sit at ``patch_offset`` 0 like every other model's."""

    def _sizes(self) -> tuple[int, int, int]:
        """(longest edge after resize, tile side, vectors per tile)."""
        if self._preset is not None:
            v = self._preset["vision"]
            per_tile = (v["image_size"] // v["patch_size"] // self._preset["pixel_shuffle_factor"]) ** 2
            return self._preset["longest_edge"], v["image_size"], per_tile
        x = self.spec.extra
        return int(x.get("longest_edge", 2048)), int(x.get("tile", 512)), int(x.get("per_tile", 64))

    def pixel_budget(self) -> PixelBudget:
        longest, _, _ = self._sizes()
        return PixelBudget(max_pixels=self.spec.max_pixels or longest * longest * 3 // 4, multiple=1, min_side=16)

    def visual_tokens(self, width: int, height: int) -> int:
        longest, tile, per_tile = self._sizes()
        scale = min(1.0, longest / max(width, height))
        tiles = -(-int(width * scale) // tile) * -(-int(height * scale) // tile)
        return per_tile * (tiles + (1 if tiles > 1 else 0))

    def _build_random(self):
        from transformers import (
            ColModernVBertConfig,
            ColModernVBertForRetrieval,
            ColModernVBertProcessor,
            ModernVBertConfig,
        )
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

        tok = byte_level_tokenizer(MODERNVBERT_SPECIALS, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   pad_token="<pad>", unk_token="<unk>")
        longest, tile, per_tile = self._sizes()
        ip = Idefics3ImageProcessorPil(do_image_splitting=True, size={"longest_edge": longest},
                                       max_image_size={"longest_edge": tile}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        processor = ColModernVBertProcessor(image_processor=ip, tokenizer=tok, image_seq_len=per_tile)
        text = dict(self._preset["text"])
        text["vocab_size"] = text["vocab_size"] or len(tok)
        text.update(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                    cls_token_id=tok.bos_token_id, sep_token_id=tok.eos_token_id)
        vlm = ModernVBertConfig(text_config=text, vision_config=self._preset["vision"],
                                image_token_id=processor.image_token_id,
                                pixel_shuffle_factor=self._preset["pixel_shuffle_factor"])
        config = ColModernVBertConfig(vlm_config=vlm, embedding_dim=self._preset["embedding_dim"])
        return random_model(self.spec, ColModernVBertForRetrieval, config), processor

    def _classes(self):
        from transformers import ColModernVBertForRetrieval, ColModernVBertProcessor

        return ColModernVBertForRetrieval, ColModernVBertProcessor

    def _after_load(self, model, processor) -> None:
        ip = processor.image_processor
        self.spec.extra.update(longest_edge=int(ip.size["longest_edge"]), tile=int(ip.max_image_size["longest_edge"]),
                               per_tile=int(processor.image_seq_len))

    def _page_embedding(self, vectors: np.ndarray, is_patch: np.ndarray, inputs, i: int) -> PageEmbedding:
        n = int(is_patch.sum())
        _, _, per_tile = self._sizes()
        side = int(round(per_tile ** 0.5))
        # Image tokens first (tile after tile, each tile `side` rows of `side`), then the rest.
        return PageEmbedding(vectors=np.concatenate([vectors[is_patch], vectors[~is_patch]]), patch_offset=0,
                             n_patches=n, grid_h=max(1, n // side), grid_w=side)

    def _model_inputs(self, inputs) -> dict:
        return {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}


def _refuse_remote_code(spec: ModelSpec) -> None:
    """A local checkpoint whose config maps classes to its own modules (``auto_map``) runs code
    from the checkpoint: refused unless the user opted in."""
    config = os.path.join(spec.name, "config.json")
    if spec.trust_remote_code or not os.path.isfile(config):
        return
    import json

    with open(config) as f:
        if json.load(f).get("auto_map"):
            raise ModelError(f"{spec.name} ships its own Python code (auto_map in config.json): pass "
                             f"--trust-remote-code to run it (only for checkpoints you trust)")


def family_of(spec: ModelSpec) -> str:
    """colqwen2 or colpali, from the preset, a local checkpoint's config.json, or the hub id."""
    if spec.name.startswith("sim:"):
        return "sim"
    if spec.name in PRESETS:
        return PRESETS[spec.name].get("family", "colqwen2")
    config = os.path.join(spec.name, "config.json")
    if os.path.isfile(config):
        import json

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
    """The checkpoint's ``preprocessor_config.json`` (a local folder, or the Hugging Face cache),
    without loading anything; None for presets with random weights or when it is not at hand."""
    if spec.weights != WEIGHTS_HUB or spec.name.startswith("sim:"):
        return None
    name = PRESETS[spec.name]["hub_id"] if spec.name in PRESETS else spec.name
    path = os.path.join(name, "preprocessor_config.json")
    if not os.path.isfile(path):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "preprocessor_config.json")
        except Exception:
            return None
        if not isinstance(cached, str):
            return None
        path = cached
    import json

    with open(path) as f:
        return json.load(f)


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
    import dataclasses

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


def adapter_for(spec: ModelSpec) -> MultiVectorAdapter:
    """The adapter for a spec: ColQwen2 (Qwen2-VL), ColPali (PaliGemma), ColModernVBERT
    checkpoints, or the simulated accelerator (``sim:<preset>[@<pages per s>]``)."""
    family = family_of(spec)
    if family == "sim":
        from operators.sim import SimAdapter

        return SimAdapter(spec)
    return {"colqwen2": ColQwen2Adapter, "colpali": ColPaliAdapter,
            "colmodernvbert": ColModernVBertAdapter}[family](spec)
