"""Resolve every model of a run in the driver, before any worker starts.

A model that cannot load inside a Ray actor costs minutes of actor restarts and a screen of
tracebacks; here it costs one line. Checked: a preset (and its published checkpoint with
``--weights hub``), a local folder (a ``config.json`` and weights files beside it), a hub id (in
the local cache, or reachable on the hub: a bounded retry, then the cause).
"""

from __future__ import annotations

import glob
import os
import time

from operators.models import PRESETS, WEIGHTS_HUB, ModelError, ModelSpec, adapter_for
from operators.models.spec import SIM_PREFIX

WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "model.safetensors")
HUB_ATTEMPTS = 3


def _folder(path: str, what: str) -> None:
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelError(f"{what} {path!r}: a folder without config.json (not a transformers checkpoint)")
    if not any(glob.glob(os.path.join(path, pattern)) for pattern in WEIGHT_FILES):
        raise ModelError(f"{what} {path!r}: no weights in the folder (*.safetensors or pytorch_model*.bin)")


def _hub(repo: str, what: str, attempts: int = HUB_ATTEMPTS) -> None:
    """In the local cache, or reachable on the hub (a few tries with backoff)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json")
    if isinstance(cached, str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelError(f"{what} {repo}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set: download it "
                         f"first (huggingface-cli download {repo}) or pass a local folder")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    why = _unreachable(endpoint, attempts)
    if why:
        raise ModelError(f"{what} {repo}: not in the local Hugging Face cache and {endpoint} cannot be reached ({why}): "
                         f"download it ahead of time (HF_HOME) or pass a local folder")
    last = None
    for attempt in range(attempts):
        try:
            hf_hub_download(repo, "config.json", etag_timeout=10)
            return
        except Exception as e:  # noqa: BLE001 - classified below
            name = type(e).__name__
            if name in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError", "EntryNotFoundError"):
                hint = {"RepositoryNotFoundError": "no such model on the Hugging Face hub (a typo?)",
                        "GatedRepoError": "a gated model: accept its terms and set HF_TOKEN",
                        "RevisionNotFoundError": "no such revision", "EntryNotFoundError": "no config.json in it"}[name]
                raise ModelError(f"{what} {repo}: {hint}") from None
            last = e
            time.sleep(min(2.0 ** attempt, 4.0))
    cause = str(last).strip().splitlines()[0][:200] if last and str(last).strip() else type(last).__name__
    raise ModelError(f"{what} {repo}: the Hugging Face hub cannot be reached ({type(last).__name__}: {cause}): "
                     f"download it ahead of time (HF_HOME) or pass a local folder") from None


def _unreachable(url: str, attempts: int, timeout_s: float = 3.0) -> str | None:
    """Why a TCP connection to the URL's host fails (None: it connects), with a deadline on the
    name lookup too: a machine without a route answers in seconds, not in library timeouts."""
    import socket
    import threading
    from urllib.parse import urlparse

    p = urlparse(url)
    host, port = p.hostname, p.port or (443 if p.scheme == "https" else 80)
    why = None
    for attempt in range(attempts):
        result: list = []

        def probe(result=result):
            try:
                socket.create_connection((host, port), timeout=timeout_s).close()
                result.append(None)
            except OSError as e:
                result.append(f"{type(e).__name__}: {e}")

        t = threading.Thread(target=probe, daemon=True)
        t.start()
        t.join(timeout_s + 1)
        why = result[0] if result else f"no answer from {host}:{port} within {timeout_s:g} s"
        if why is None:
            return None
        if attempt + 1 < attempts:
            time.sleep(1.0)
    return why


def check_checkpoint(name: str, what: str) -> None:
    if os.path.isdir(name):
        _folder(name, what)
    elif os.path.sep in name and not name.count("/") == 1:
        raise ModelError(f"{what} {name!r}: no such folder")
    else:
        _hub(name, what)


def check_models(model: str, spec: ModelSpec) -> None:
    """``model``: the run's ``--model`` (visual, ``text:`` and ``sv:`` parts); ``spec``: the
    visual part as a ModelSpec."""
    from operators.models import split_model_specs, sv_model_spec
    from operators.models.sv import SV_PRESETS, sv_embedder_for
    from operators.models.text import PACKAGED, resolve_text_model

    adapter = adapter_for(spec)  # a bad preset or --weights random without one: its own one line
    if not spec.name.startswith("sim:") and spec.weights == WEIGHTS_HUB:
        preset = PRESETS.get(spec.name)
        check_checkpoint(preset["hub_id"] if preset else spec.name, "model")
    del adapter
    _, text_model = split_model_specs(model)
    if text_model and not text_model.startswith(SIM_PREFIX):  # a simulated text model loads nothing
        source = resolve_text_model(text_model)
        if text_model.lower() not in PACKAGED:
            check_checkpoint(source, "text model")
    sv = sv_model_spec(model)
    if sv:
        embedder = sv_embedder_for(sv, spec)
        base = sv.split("@", 1)[0]
        if spec.weights == WEIGHTS_HUB or base not in SV_PRESETS:
            preset = SV_PRESETS.get(base)
            check_checkpoint(preset["hub_id"] if preset and preset.get("hub_id") else base, "sv model")
        del embedder
