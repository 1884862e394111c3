"""ColModernVBERT: ``ColModernVBertForRetrieval`` (ModernBERT + SigLIP) and its processor."""

from __future__ import annotations

import dataclasses

import numpy as np

from operators.models.base import PageEmbedding, TransformersAdapter, random_model
from operators.models.offline_tokenizers import MODERNVBERT_SPECIALS, byte_level_tokenizer


class ColModernVBertAdapter(TransformersAdapter):
    """``ColModernVBertForRetrieval`` (ModernBERT + SigLIP, bidirectional) + its processor (the
    Idefics3 PIL image processor: a page becomes tiles of the vision tower's size plus a global
    view). The image-token vectors are not contiguous (tile tags sit between tiles), so each
    page's vectors are reordered image tokens first: MaxSim does not depend on order, and the
    patches then sit at ``patch_offset`` 0 like every other model's."""

    family_name = "colmodernvbert"

    def _sizes(self) -> tuple[int, int, int]:
        """(longest edge after resize, tile side, vectors per tile)."""
        return self.family.sizes(self.spec)

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
        self.spec = dataclasses.replace(self.spec, extra={
            **self.spec.extra, "longest_edge": int(ip.size["longest_edge"]), "tile": int(ip.max_image_size["longest_edge"]),
            "per_tile": int(processor.image_seq_len)})

    def _page_embedding(self, vectors: np.ndarray, is_patch: np.ndarray, inputs, i: int) -> PageEmbedding:
        n = int(is_patch.sum())
        _, _, per_tile = self._sizes()
        side = int(round(per_tile ** 0.5))
        # Image tokens first (tile after tile, each tile `side` rows of `side`), then the rest.
        return PageEmbedding(vectors=np.concatenate([vectors[is_patch], vectors[~is_patch]]), patch_offset=0,
                             n_patches=n, grid_h=max(1, n // side), grid_w=side)

    def _model_inputs(self, inputs) -> dict:
        return {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
