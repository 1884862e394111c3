"""Single-vector VLM embedders: one vector per page image (and per query) from a VLM's last
hidden state, as Qwen3-VL-Embedding does.

The Qwen3-VL embedder runs ``transformers``' own ``Qwen3VLModel`` over an instruction prompt
(system: the instruction; user: the page image, or the query text) and pools the hidden state of
the last token. Documents and queries take different instructions (asymmetric). The output can
be truncated to fewer dimensions (Matryoshka: the first ``dim`` coordinates, re-normalised).

Spec in ``--model``: ``sv:<preset or hub id or folder>[@DIM]``, e.g.
``colqwen2,sv:qwen3-vl-embedding-2b@1024``. Its vectors become the ``sv_vlm`` column and the
``sv-vlm`` layout (a page-level field in Milvus).
"""

from __future__ import annotations

import os
import time

import numpy as np

from operators.models.base import load_once, random_model, refuse_remote_code
from operators.models.offline_tokenizers import QWEN2_SPECIAL_TOKENS, byte_level_qwen2_tokenizer
from operators.models.spec import WEIGHTS_HUB, WEIGHTS_RANDOM, ModelError, ModelSpec
from operators.render import PixelBudget

DOC_INSTRUCTION = "Represent the user's input."
QUERY_INSTRUCTION = "Retrieve images or text relevant to the user's query."

SV_PRESETS: dict[str, dict] = {
    "qwen3-vl-embedding-tiny": dict(
        text=dict(vocab_size=None, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16,
                  rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [2, 3, 3],
                                   "mrope_interleaved": True}),
        vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                    num_position_embeddings=256, deepstack_visual_indexes=[1]),
        max_pixels=32 * 32 * 64, hub_id=None,
    ),
    # Qwen3-VL-Embedding-2B: the Qwen3-VL-2B backbone, 2048-d output (Matryoshka down to 64).
    "qwen3-vl-embedding-2b": dict(
        text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                  rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
                                   "mrope_interleaved": True}),
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                    num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17]),
        max_pixels=32 * 32 * 1024, hub_id="Qwen/Qwen3-VL-Embedding-2B",
    ),
}


def parse_sv_spec(text: str) -> tuple[str, int | None]:
    """``qwen3-vl-embedding-2b@1024`` -> (name, 1024); the dimension is optional."""
    name, _, dim = text.partition("@")
    if dim:
        if not dim.isdigit() or int(dim) < 8:
            raise ModelError(f"sv:{text}: the output dimension after @ must be an integer >= 8")
        return name, int(dim)
    return name, None


class Qwen3VLEmbedder:
    """One L2-normalised vector per page image or query (last-token pooling)."""

    kind = "sv"

    def __init__(self, spec: ModelSpec, out_dim: int | None = None):
        self.spec = spec
        preset = SV_PRESETS.get(spec.name)
        if preset is None and spec.weights == WEIGHTS_RANDOM:
            raise ModelError(f"sv:{spec.name}: --weights random needs a preset ({', '.join(sorted(SV_PRESETS))})")
        if preset is not None and spec.weights == WEIGHTS_HUB and not preset["hub_id"]:
            raise ModelError(f"sv:{spec.name} has no published checkpoint: use --weights random")
        self._preset = preset
        self.name = spec.name
        self._out_dim = out_dim
        self._max_pixels = spec.max_pixels or (preset or {}).get("max_pixels") or 32 * 32 * 1024
        self.model = None
        self.processor = None
        self.forward_s = 0.0

    @property
    def full_dim(self) -> int:
        if self.model is not None:
            return int(self.model.config.text_config.hidden_size)
        if self._preset is not None:
            return int(self._preset["text"]["hidden_size"])
        config = os.path.join(self.spec.name, "config.json")
        if os.path.isfile(config):  # a local checkpoint: its own width
            import json

            with open(config) as f:
                return int(json.load(f).get("text_config", {}).get("hidden_size", 2048))
        return int(self.spec.extra.get("hidden_size", 2048))

    @property
    def dim(self) -> int:
        full = self.full_dim
        if self._out_dim and self._out_dim > full:
            raise ModelError(f"sv:{self.name}@{self._out_dim}: the model has only {full} dimensions")
        return self._out_dim or full

    def pixel_budget(self) -> PixelBudget:
        return PixelBudget(max_pixels=self._max_pixels, multiple=32, min_side=64)

    def _processor(self, tokenizer):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        image_processor = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, min_pixels=64 * 64,
                                                   max_pixels=self._max_pixels, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        return _ImageTextProcessor(tokenizer, image_processor)

    def _build_random(self):
        from transformers import Qwen3VLConfig, Qwen3VLModel

        tokenizer = byte_level_qwen2_tokenizer()
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_SPECIAL_TOKENS}
        text = dict(self._preset["text"])
        text["vocab_size"] = text["vocab_size"] or len(tokenizer)
        text.update(bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
        config = Qwen3VLConfig(text_config=text, vision_config=dict(self._preset["vision"]),
                               image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                               vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
        return random_model(self.spec, Qwen3VLModel, config), self._processor(tokenizer)

    def _load_pretrained(self):
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLModel

        src = self._preset["hub_id"] if self._preset else self.spec.name
        refuse_remote_code(self.spec)
        trust = {"trust_remote_code": True} if self.spec.trust_remote_code else {}
        try:
            processor = _ImageTextProcessor(AutoTokenizer.from_pretrained(src, **trust),
                                            AutoImageProcessor.from_pretrained(src, **trust))
            model = Qwen3VLModel.from_pretrained(src, dtype=self.torch_dtype,
                                                 attn_implementation=self.spec.attn_implementation, **trust)
        except OSError as e:
            where = "local directory" if os.path.isdir(src) else "hub id"
            raise ModelError(f"cannot load Qwen3VLModel from {where} {src!r}: {str(e).splitlines()[0]}") from None
        return model, processor

    def load(self) -> None:
        if load_once(self):
            self.dim  # noqa: B018  (checks the requested dimension against the loaded model)

    def effective_settings(self) -> dict:
        return {"model": self.name, "weights": self.spec.weights, "dim": self.dim, "full_dim": self.full_dim,
                "pooling": "last-token", "max_pixels": self._max_pixels}

    @staticmethod
    def _prompt(instruction: str, content: str) -> str:
        return (f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n"
                f"<|im_start|>assistant\n")

    def _pool(self, inputs) -> np.ndarray:
        import torch

        t0 = time.perf_counter()
        with torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
        last = inputs["attention_mask"].sum(dim=1) - 1  # right padding: the last real token
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float().cpu().numpy()
        self.forward_s += time.perf_counter() - t0
        pooled = pooled[:, : self.dim]  # Matryoshka: the leading coordinates
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def embed_images(self, images: list[np.ndarray], instruction: str = DOC_INSTRUCTION) -> np.ndarray:
        from PIL import Image

        self.load()
        pil = [Image.fromarray(im, mode="RGB") for im in images]
        inputs = self.processor.images(pil, lambda pads: self._prompt(
            instruction, f"<|vision_start|>{pads}<|vision_end|>"))
        return self._pool({k: v.to(self.device) for k, v in inputs.items()})

    def embed_queries(self, queries: list[str], instruction: str = QUERY_INSTRUCTION) -> np.ndarray:
        self.load()
        texts = [self._prompt(instruction, q) for q in queries]
        inputs = self.processor.tokenizer(texts, padding=True, return_tensors="pt")
        return self._pool({k: v.to(self.device) for k, v in inputs.items()})


class _ImageTextProcessor:
    """What Qwen3VLProcessor does for images, without its video half (which needs torchvision):
    the image processor's patches, and the prompt with one ``<|image_pad|>`` per merged patch."""

    def __init__(self, tokenizer, image_processor):
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    def images(self, pil: list, prompt_for) -> dict:
        out = self.image_processor(images=pil, return_tensors="pt")
        merge = int(getattr(self.image_processor, "merge_size", 2)) ** 2
        texts = [prompt_for("<|image_pad|>" * int(thw.prod() // merge)) for thw in out["image_grid_thw"]]
        tok = self.tokenizer(texts, padding=True, return_tensors="pt")
        image_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        # 1 marks image tokens, 0 text: what M-RoPE needs to lay the patches out in 2-D.
        mm = (tok["input_ids"] == image_id).long()
        return {**tok, "mm_token_type_ids": mm, "pixel_values": out["pixel_values"],
                "image_grid_thw": out["image_grid_thw"]}

    def save_pretrained(self, path) -> None:
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)


def sv_embedder_for(text: str, base: ModelSpec) -> Qwen3VLEmbedder:
    """``text`` is what follows ``sv:`` in --model; device, dtype, weights follow the run's."""
    name, dim = parse_sv_spec(text)
    if name not in SV_PRESETS:
        config = os.path.join(name, "config.json")
        if os.path.isfile(config):
            import json

            with open(config) as f:
                model_type = json.load(f).get("model_type", "")
            if model_type != "qwen3_vl":
                raise ModelError(f"sv:{name}: unsupported model_type {model_type!r} (supported: qwen3_vl)")
    spec = ModelSpec(name=name, weights=base.weights, device=base.device, dtype=base.dtype,
                     attn_implementation=base.attn_implementation, trust_remote_code=base.trust_remote_code)
    return Qwen3VLEmbedder(spec, dim)
