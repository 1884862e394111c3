"""A model family, described once: its budget rules (what a checkpoint's processor decides and
how pages are rendered for it), its visual tokens per page, the vectors besides the image
patches (prompt and special tokens), and its patch grid. The adapters, the simulated
accelerator (``sim:``), the pixel budget decided before rendering, the job's memory estimate
and ``pagemill plan`` all ask the family.

>>> f = FAMILIES["colqwen2"]
>>> f.pixel_budget(ModelSpec("colqwen2", max_pixels=28 * 28 * 768)), f.visual_tokens(ModelSpec("colqwen2"), 672, 868)
(PixelBudget(max_pixels=602112, multiple=28, max_side=8192, min_side=56), 744)
"""

from __future__ import annotations

import dataclasses

from operators.models.presets import PRESETS
from operators.models.spec import WEIGHTS_RANDOM, ModelSpec, family_of, parse_sim, preprocessor_config
from operators.render import PixelBudget


class Family:
    name: str
    special: tuple[int, int]  # vectors before and after the image patches, as the processors emit them

    def preset(self, spec) -> dict | None:
        return PRESETS.get(spec.name)

    def decide(self, spec, processor: dict | None):
        """The spec with its budget decided: the user's ``--max-pixels``, else the checkpoint's
        processor's settings (``processor``: its image-processor config, or None), else the
        preset's. ``max_pixels`` is always set on what it returns."""
        raise NotImplementedError

    def pixel_budget(self, spec) -> PixelBudget:
        """The render target of a spec whose budget is decided."""
        raise NotImplementedError

    def visual_tokens(self, spec, width: int, height: int) -> int:
        """Image-patch vectors (and forward-pass tokens) of a page of this size."""
        return max(1, width * height // (28 * 28))

    def grid(self, spec, width: int, height: int) -> tuple[int, int]:
        """Patch rows and columns of a page of this size, as the processor makes them."""
        n = self.visual_tokens(spec, width, height)
        side = max(1, int(round(n ** 0.5)))
        return side, max(1, n // side)



class ColQwen2Family(Family):
    """Qwen2-VL and Qwen2.5-VL: a page keeps its aspect ratio within a pixel budget, each 2x2 group
    of 14 px patches one vector (a token per 28 x 28 px)."""

    name = "colqwen2"
    special = (4, 16)
    DEFAULT_MAX_PIXELS = 28 * 28 * 768

    def decide(self, spec, processor):
        if spec.max_pixels:
            return spec
        budget = (processor or {}).get("max_pixels") or ((processor or {}).get("size") or {}).get("longest_edge")
        if not budget:
            budget = (self.preset(spec) or {}).get("max_pixels") or self.DEFAULT_MAX_PIXELS
        return dataclasses.replace(spec, max_pixels=int(budget))

    def pixel_budget(self, spec) -> PixelBudget:
        # Sides a multiple of patch (14) x merge (2): the processor then keeps our size as is.
        return PixelBudget(max_pixels=spec.max_pixels or self.decide(spec, None).max_pixels, multiple=28, min_side=56)

    def grid(self, spec, width: int, height: int) -> tuple[int, int]:
        return max(1, height // 28), max(1, width // 28)


class ColPaliFamily(Family):
    """PaliGemma: every page squared to the processor's ``image_size`` (448 px for ColPali v1.x), a
    fixed grid of ``(image_size / 14)^2`` patch vectors before the prompt tokens."""

    name = "colpali"
    special = (0, 6)

    def image_size(self, spec) -> int:
        preset = self.preset(spec)
        if preset is not None:
            return int(preset["vision"]["image_size"])
        return int(spec.extra.get("image_size", 448))

    def decide(self, spec, processor):
        side = ((processor or {}).get("size") or {}).get("height") or (processor or {}).get("image_size")
        if side and self.preset(spec) is None:
            spec = dataclasses.replace(spec, extra={**spec.extra, "image_size": int(side)})
        if spec.max_pixels:
            return spec
        return dataclasses.replace(spec, max_pixels=self.image_size(spec) ** 2)

    def pixel_budget(self, spec) -> PixelBudget:
        # Render about as many pixels as the model sees; the processor then squares the page.
        side = self.image_size(spec)
        return PixelBudget(max_pixels=spec.max_pixels or side * side, multiple=1, min_side=14)

    def visual_tokens(self, spec, width: int, height: int) -> int:
        return (self.image_size(spec) // 14) ** 2  # fixed grid, whatever the page size


class ColModernVBertFamily(Family):
    """ModernVBERT (ModernBERT + SigLIP): a page scaled to a longest edge, split into tiles of the
    vision tower's size plus a global view; a tile's patches pixel-shuffled into 64 vectors."""

    name = "colmodernvbert"
    special = (0, 18)

    def sizes(self, spec) -> tuple[int, int, int]:
        """(longest edge after resize, tile side, vectors per tile)."""
        preset = self.preset(spec)
        if preset is not None:
            v = preset["vision"]
            per_tile = (v["image_size"] // v["patch_size"] // preset["pixel_shuffle_factor"]) ** 2
            return preset["longest_edge"], v["image_size"], per_tile
        x = spec.extra
        return int(x.get("longest_edge", 2048)), int(x.get("tile", 512)), int(x.get("per_tile", 64))

    def decide(self, spec, processor):
        size = (processor or {}).get("size") or {}
        if size.get("longest_edge") and self.preset(spec) is None:
            tile = ((processor or {}).get("max_image_size") or {}).get("longest_edge", 512)
            spec = dataclasses.replace(spec, extra={**spec.extra, "longest_edge": int(size["longest_edge"]),
                                                    "tile": int(tile)})
        if spec.max_pixels:
            return spec
        longest, _, _ = self.sizes(spec)
        return dataclasses.replace(spec, max_pixels=longest * longest * 3 // 4)

    def pixel_budget(self, spec) -> PixelBudget:
        longest, _, _ = self.sizes(spec)
        return PixelBudget(max_pixels=spec.max_pixels or longest * longest * 3 // 4, multiple=1, min_side=16)

    def visual_tokens(self, spec, width: int, height: int) -> int:
        longest, tile, per_tile = self.sizes(spec)
        scale = min(1.0, longest / max(width, height))
        tiles = -(-int(width * scale) // tile) * -(-int(height * scale) // tile)
        return per_tile * (tiles + (1 if tiles > 1 else 0))

    def grid(self, spec, width: int, height: int) -> tuple[int, int]:
        return max(1, self.visual_tokens(spec, width, height) // 8), 8


FAMILIES: dict[str, Family] = {f.name: f for f in (ColQwen2Family(), ColPaliFamily(), ColModernVBertFamily())}


def decide_budget(spec: ModelSpec) -> ModelSpec:
    """The pixel budget, decided once, in the driver, before any page is rendered: the user's
    ``--max-pixels``, else the checkpoint's processor (its ``max_pixels``, image size or longest
    edge), else the preset's, by the family's rules. The spec it returns has ``max_pixels`` set,
    and the embedding actors use exactly this budget (the processor is told it), so no page is
    rendered at one size and resized to another."""
    family = family_of(spec)
    if family == "sim":
        preset, _ = parse_sim(spec.name)
        base = decide_budget(ModelSpec(name=preset, weights=WEIGHTS_RANDOM, max_pixels=spec.max_pixels))
        return dataclasses.replace(spec, max_pixels=base.max_pixels)
    return FAMILIES[family].decide(spec, preprocessor_config(spec))


def family(spec: ModelSpec) -> Family:
    """The family of a spec (of a ``sim:`` spec, its preset's)."""
    name = spec.name
    if name.startswith("sim:"):
        name = parse_sim(name)[0]
    return FAMILIES[family_of(ModelSpec(name=name))]


def budget_side(max_pixels: int) -> tuple[int, int]:
    """A square page of the budget: the page a full-budget forward pass is sized by."""
    side = int(max_pixels ** 0.5)
    return side, side


def plan_name(model: str) -> str:
    """The name ``pagemill plan`` knows a ``--model`` by: ``sim:colqwen2@50`` -> ``colqwen2``,
    ``sv:qwen3-vl-embedding-2b@1024`` -> ``qwen3-vl-embedding-2b``; the first part of a spec with
    ``text:``/``sv:`` parts."""
    first = model.split(",", 1)[0].strip()
    return first.removeprefix("sim:").removeprefix("sv:").split("@", 1)[0]
