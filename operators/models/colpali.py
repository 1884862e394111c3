"""ColPali: ``ColPaliForRetrieval`` (PaliGemma: SigLIP + Gemma) and ``ColPaliProcessor``."""

from __future__ import annotations

import dataclasses

from operators.models.base import TransformersAdapter, random_model
from operators.models.offline_tokenizers import PALIGEMMA_SPECIALS, byte_level_tokenizer


class ColPaliAdapter(TransformersAdapter):
    """``ColPaliForRetrieval`` (PaliGemma: SigLIP + Gemma) + ``ColPaliProcessor`` (PIL SigLIP
    processor). Pages are resized to a fixed square (448 px for ColPali v1.x): a fixed grid of
    ``(image_size / 14)^2`` patch vectors (1024) before the prompt tokens."""

    family_name = "colpali"

    def _image_size(self) -> int:
        return self.family.image_size(self.spec)

    def _build_random(self):
        from transformers import ColPaliConfig, ColPaliForRetrieval, ColPaliProcessor, PaliGemmaConfig
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

        tokenizer = byte_level_tokenizer(PALIGEMMA_SPECIALS, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                         unk_token="<unk>")
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
        self.spec = dataclasses.replace(self.spec, extra={**self.spec.extra, "image_size": int(size["height"])})

    def _grid(self, inputs, i: int, n_patches: int) -> tuple[int, int]:
        side = int(round(n_patches ** 0.5))
        return side, side

    def _model_inputs(self, inputs) -> dict:
        return {k: v for k, v in inputs.items() if k not in ("labels", "token_type_ids")}
