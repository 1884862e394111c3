"""The checkpoints a run loads from the hub, to fetch into the model cache once: what pagemill's own
check before a run looks for (operators/models/preflight.py), from the same presets."""

from __future__ import annotations

from pathlib import Path

from deploy.values import ValuesError

FETCH_SCRIPT = Path(__file__).with_name("fetch_weights.py")


def _hub_id(name: str) -> str | None:
    """A hub id (owner/name), not a local folder."""
    return name if name.count("/") == 1 and not name.startswith((".", "/", "~")) else None


def checkpoints(model: str, weights: str) -> list[str]:
    """``colqwen2`` -> ``["vidore/colqwen2-v1.0-hf"]``; text and sv models too; none for random
    weights, simulations and local folders."""
    try:
        from operators.models.presets import PRESETS
        from operators.models.spec import ModelError, split_model_specs, sv_model_spec
        from operators.models.sv import SV_PRESETS
        from operators.models.text import PACKAGED
    except ImportError as e:
        raise ValuesError(f"weights_cache.repos: list the checkpoints to fetch (pagemill is not importable here "
                          f"to find those of ingest.model: {e})") from None
    try:
        visual, text = split_model_specs(model)
    except ModelError as e:
        raise ValuesError(f"ingest.model: {e}") from None
    found = []
    if weights == "hub" and not visual.startswith("sim:"):
        found.append(PRESETS[visual]["hub_id"] if visual in PRESETS else _hub_id(visual))
    if text and text.lower() not in PACKAGED:
        found.append(_hub_id(text))
    sv = sv_model_spec(model)
    if sv:
        base = sv.split("@", 1)[0]
        if base in SV_PRESETS:
            found.append(SV_PRESETS[base]["hub_id"] if weights == "hub" else None)
        else:
            found.append(_hub_id(base))
    return [f for f in found if f]


def fetch_script() -> str:
    """The script without its docstring (the manifest says what it does)."""
    text = FETCH_SCRIPT.read_text()
    return text[text.index('"""', 3) + 3:].lstrip("\n")
