"""infra/render.py and its deploy package, loaded for the tests (they ship beside the manifests, not
in pagemill's package)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import yaml
from conftest import REPO

INFRA = REPO / "infra"


def _load_render():
    spec = importlib.util.spec_from_file_location("pagemill_render", INFRA / "render.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pagemill_render"] = module
    spec.loader.exec_module(module)  # puts infra/ on sys.path for its deploy package
    return module


render = _load_render()
import deploy.entrypoint  # noqa: E402
import deploy.manifests  # noqa: E402
import deploy.template  # noqa: E402
import deploy.values  # noqa: E402
import deploy.weights  # noqa: E402

deploy = types.SimpleNamespace(entrypoint=deploy.entrypoint, manifests=deploy.manifests, values=deploy.values,
                               weights=deploy.weights, template_module=deploy.template)


def render_docs(values_path: Path | None, where: str = "deploy") -> dict[str, list[dict]]:
    """{path: its YAML documents} of the values at ``values_path`` over infra/values.yaml."""
    return {p: [d for d in yaml.safe_load_all(t) if d] for p, t in render.render(values_path, where).items()}
