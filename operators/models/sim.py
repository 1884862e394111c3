"""A simulated accelerator: ``--model sim:<preset>[@<pages per s>]``.

Each embedding actor behaves like one accelerator running the preset's model: it sleeps
``1 / rate`` seconds per page (``time.sleep`` releases the GIL, as a GPU kernel does) and returns
unit-norm pseudo-random vectors of the preset's exact shape: the image patches of the page at the
preset's pixel budget (its grid), plus the model's prompt and special tokens, in its dimension.
The vectors are deterministic per page id, so a re-run, a retried batch or another executor gives
the same bytes. Pages render at the preset's budget (``--max-pixels`` overrides it). Everything
after the model (render, pooling, sinks, ledger) is the real code, so the data path of a GPU
fleet can be sized, and a Milvus cluster or an object store checked, on CPUs.

>>> a = SimAdapter(ModelSpec("sim:colqwen2@50"))
>>> a.pixel_budget().max_pixels, a.rate, a.dim
(602112, 50.0, 128)
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from operators.models.base import MultiVectorAdapter, PageEmbedding
from operators.models.spec import PRESETS, ModelError, ModelSpec, family_of, parse_sim
from operators.render import PixelBudget


def _seed(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class SimAdapter(MultiVectorAdapter):
    """A multi-vector adapter without a model: the preset's shapes, a per-page sleep."""

    def __init__(self, spec: ModelSpec):
        from operators.models.adapters import ADAPTERS

        self.spec = spec
        preset, self.rate = parse_sim(spec.name)
        if preset not in PRESETS:
            raise ModelError(f"--model {spec.name}: unknown preset {preset!r} for the simulated accelerator "
                             f"(presets: {', '.join(sorted(PRESETS))})")
        self.preset = preset
        base = ModelSpec(name=preset, weights="random", max_pixels=spec.max_pixels)
        self.base = ADAPTERS[family_of(base)](base)
        self.family = self.base.family  # its shapes: the image patches, the vectors besides them
        self.name = spec.name
        self.dim = self.base.dim
        self.device = "sim"
        self.forward_s = 0.0
        self.model = None

    def pixel_budget(self) -> PixelBudget:
        return self.base.pixel_budget()

    def visual_tokens(self, width: int, height: int) -> int:
        return self.base.visual_tokens(width, height)

    def load(self) -> None:
        self.model = "sim"  # nothing to load: the point is to need no accelerator

    def grid(self, width: int, height: int) -> tuple[int, int]:
        """Patch rows and columns of a page of this size, as the preset's processor makes them."""
        return self.family.grid(self.base.spec, width, height)

    def embed_images(self, images: list[np.ndarray], keys: list[str] | None = None) -> list[PageEmbedding]:
        t0 = time.perf_counter()
        before, after = self.family.special
        out = []
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            gh, gw = self.grid(w, h)
            n = gh * gw
            key = keys[i] if keys else f"{w}x{h}:{hashlib.blake2b(im.tobytes(), digest_size=8).hexdigest()}"
            vectors = _unit_rows(np.random.default_rng(_seed(key)), before + n + after, self.dim)
            out.append(PageEmbedding(vectors=vectors, patch_offset=before, n_patches=n, grid_h=gh, grid_w=gw))
        # The accelerator's time: what a real forward pass of these pages takes at the rate.
        left = len(images) / self.rate - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)
        self.forward_s += time.perf_counter() - t0
        return out

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        before, after = self.family.special
        return [_unit_rows(np.random.default_rng(_seed("query:" + q)), before + max(1, len(q.split())) + after, self.dim)
                for q in queries]

    def effective_settings(self) -> dict:
        return {"model": self.name, "weights": "sim", "device": "sim", "dtype": "float32", "attn_implementation": None,
                "max_pixels": self.pixel_budget().max_pixels, "dim": self.dim, "sim_pages_per_s": self.rate}
