"""What a ``--model`` option names: the visual model's spec (a preset, a hub id or a folder), the
optional ``text:`` and ``sv:`` models beside it, and what is known about a model before loading
it (its family, its checkpoint's preprocessor settings, the pixel budget).

Spec strings (``--model``):

- ``colqwen2-tiny``: a few-layer ColQwen2 (real class, random weights, offline tokenizer) for
  demos and tests; a page embeds in milliseconds on a CPU.
- ``colqwen2``: the real ColQwen2 v1.0 architecture (Qwen2-VL-2B backbone); with ``--weights
  random`` it is built offline at real size (for calibration), with ``--weights hub`` it is
  ``vidore/colqwen2-v1.0-hf``.
- any hub id or local directory holding a ColQwen2, ColPali or ColModernVBERT checkpoint, with
  ``--weights hub``.
- ``sim:<preset>[@<pages per s>]``: the simulated accelerator (operators/models/sim.py).
- ``,text:<model>`` adds the text layer's model, ``,sv:<model>`` a single-vector VLM embedder:
  ``colqwen2,text:all-MiniLM-L6-v2,sv:qwen3-vl-embedding-2b``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from operators.models.presets import PRESETS

WEIGHTS_HUB = "hub"
WEIGHTS_RANDOM = "random"
TEXT_PREFIX = "text:"
SV_PREFIX = "sv:"
SIM_PREFIX = "sim:"
DEFAULT_SIM_RATE = 50.0  # pages per second: one H100 at the target rate for ColQwen2


class ModelError(Exception):
    """The model spec cannot be resolved or loaded; the message says what to do."""


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


def split_model_specs(spec: str) -> tuple[str, str | None]:
    """``"colqwen2,text:all-MiniLM-L6-v2"`` -> (visual spec, text model name or None)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    visual = [p for p in parts if not p.startswith((TEXT_PREFIX, SV_PREFIX))]
    text = [p[len(TEXT_PREFIX):] for p in parts if p.startswith(TEXT_PREFIX)]
    if len(visual) != 1:
        raise ModelError(f"--model {spec!r}: give exactly one multi-vector page-image model (plus optionally "
                         f"text:<model> and sv:<model>)")
    if sum(p.startswith(SV_PREFIX) for p in parts) > 1:
        raise ModelError(f"--model {spec!r}: at most one sv:<model>")
    if len(text) > 1:
        raise ModelError(f"--model {spec!r}: at most one text:<model>")
    return visual[0], (text[0] if text else None)


def sv_model_spec(spec: str) -> str | None:
    """``"colqwen2,sv:qwen3-vl-embedding-2b@1024"`` -> ``"qwen3-vl-embedding-2b@1024"``."""
    found = [p.strip()[len(SV_PREFIX):] for p in spec.split(",") if p.strip().startswith(SV_PREFIX)]
    return found[0] if found else None


def parse_sim(name: str) -> tuple[str, float]:
    """``sim:colqwen2@50`` -> (``colqwen2``, 50.0)."""
    body = name[len(SIM_PREFIX):]
    preset, _, rate = body.partition("@")
    try:
        value = float(rate) if rate else DEFAULT_SIM_RATE
    except ValueError:
        raise ModelError(f"--model {name}: the rate after @ must be pages per second, e.g. sim:colqwen2@50") from None
    if value <= 0:
        raise ModelError(f"--model {name}: the rate must be > 0 pages per second")
    return preset, value


def family_of(spec: ModelSpec) -> str:
    """colqwen2 or colpali, from the preset, a local checkpoint's config.json, or the hub id."""
    if spec.name.startswith("sim:"):
        return "sim"
    if spec.name in PRESETS:
        return PRESETS[spec.name].get("family", "colqwen2")
    config = os.path.join(spec.name, "config.json")
    if os.path.isfile(config):
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
    """The checkpoint's image-processor settings (a local folder, or the Hugging Face cache),
    without loading anything: ``preprocessor_config.json``, or the ``image_processor`` section of
    ``processor_config.json`` (where transformers 5 saves it); None for presets with random
    weights or when neither is at hand."""
    if spec.weights != WEIGHTS_HUB or spec.name.startswith("sim:"):
        return None
    name = PRESETS[spec.name]["hub_id"] if spec.name in PRESETS else spec.name
    for filename, section in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = _checkpoint_file(name, filename)
        if path is None:
            continue
        with open(path) as f:
            conf = json.load(f)
        conf = conf.get(section) if section else conf
        if isinstance(conf, dict):
            return conf
    return None


def _checkpoint_file(name: str, filename: str) -> str | None:
    """A file of a checkpoint: in its folder, or in the Hugging Face cache (no download)."""
    path = os.path.join(name, filename)
    if os.path.isfile(path):
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, filename)
    except Exception:
        return None
    return cached if isinstance(cached, str) else None


def checkpoint_id(spec) -> str | None:
    """The revision of a hub checkpoint (its cache snapshot), or a checksum of a local folder's
    config and weight files (names and sizes); None for random weights and simulations."""
    if spec.weights != WEIGHTS_HUB or spec.name.startswith("sim:"):
        return None
    name = PRESETS[spec.name]["hub_id"] if spec.name in PRESETS else spec.name
    if os.path.isdir(name):
        h = hashlib.blake2b(digest_size=8)
        with open(os.path.join(name, "config.json"), "rb") as f:
            h.update(f.read())
        for entry in sorted(os.listdir(name)):
            if entry.endswith((".safetensors", ".bin")):
                h.update(f"{entry}:{os.path.getsize(os.path.join(name, entry))}".encode())
        return "sha:" + h.hexdigest()
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return "rev:" + os.path.basename(os.path.dirname(cached))
    except Exception:
        pass
    return None
