"""``text:sim:<model>``: the text layer without its model (as ``sim:`` is for page images)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from operators.models import ModelError
from operators.models.text import SimTextEmbedder, TextEmbedder, text_embedder


def test_the_simulated_text_model_has_the_models_dimension_and_a_vector_per_text():
    real, sim = text_embedder("all-MiniLM-L6-v2"), text_embedder("sim:all-MiniLM-L6-v2")
    assert type(real) is TextEmbedder and type(sim) is SimTextEmbedder
    assert sim.dim == real.dim == 384 and sim.effective_settings()["text_model"] == "sim:all-MiniLM-L6-v2"
    a = sim.embed_texts(["revenue by quarter", "revenue by quarter", "a map of the harbour"])
    again = text_embedder("sim:all-MiniLM-L6-v2").embed_texts(["revenue by quarter"])
    assert a.shape == (3, 384) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (a[0] == a[1]).all() and (a[0] == again[0]).all() and not (a[0] == a[2]).all()
    chunks, means = sim.embed_chunks(["word " * 400, "two words"])
    assert [len(c) for c in chunks] == [3, 1] and means.shape == (2, 384)  # the real chunker: 150 words, 25 shared


def test_a_simulated_text_model_loads_no_torch_and_needs_a_name():
    code = ("import sys; from operators.models.text import text_embedder; e = text_embedder('sim:all-MiniLM-L6-v2');"
            "e.load(); e.embed_chunks(['a page of text']); print('torch' in sys.modules, 'transformers' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["False", "False"]
    with pytest.raises(ModelError, match="name the model to simulate"):
        text_embedder("sim:")
