"""ColQwen2 and ColQwen2.5: ``ColQwen2ForRetrieval`` (a Qwen2-VL or Qwen2.5-VL backbone) and
``ColQwen2Processor`` (the PIL image processor). Pages keep their aspect ratio within a pixel
budget; each 2x2 group of 14 px patches becomes one vector."""

from __future__ import annotations

import dataclasses

from operators.models.base import TransformersAdapter, random_model
from operators.models.offline_tokenizers import QWEN2_SPECIAL_TOKENS, byte_level_qwen2_tokenizer


class ColQwen2Adapter(TransformersAdapter):
    """``ColQwen2ForRetrieval`` + ``ColQwen2Processor`` (PIL image processor)."""

    family_name = "colqwen2"

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
        image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=self.pixel_budget().max_pixels)
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

    def _after_load(self, model, processor) -> None:
        ip = processor.image_processor
        # The budget lives in ``size`` alone: transformers 5 deprecates the processor's
        # min_pixels / max_pixels, which, when a checkpoint sets them, override ``size``.
        shortest = getattr(ip, "min_pixels", None) or ip.size["shortest_edge"]
        longest = self.spec.max_pixels or getattr(ip, "max_pixels", None) or ip.size["longest_edge"]
        ip.min_pixels = ip.max_pixels = None
        ip.size = {"shortest_edge": int(shortest), "longest_edge": int(longest)}
        self.spec = dataclasses.replace(self.spec, max_pixels=int(longest))

    def _loaded(self) -> None:
        self._merge = int(getattr(self.processor.image_processor, "merge_size", 2))

    def _grid(self, inputs, i: int, n_patches: int) -> tuple[int, int]:
        _, gh, gw = (int(x) for x in inputs["image_grid_thw"][i])
        return gh // self._merge, gw // self._merge
