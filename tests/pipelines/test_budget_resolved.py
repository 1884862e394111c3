"""The pixel budget of a checkpoint whose processor differs from its family's preset: decided once,
before rendering, and the same in the rendered pages, in the processor that embeds them and in
``_index.json``.

ColPali squares every page to its processor's ``image_size``; ColModernVBERT scales a page's
longest edge to its processor's ``longest_edge``. Both are read from the checkpoint, so a
checkpoint saved with another size than the preset's must be rendered at that size.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from operators.models import PRESETS, ModelSpec, adapter_for
from pipelines.cli import main


def _doc(path) -> None:
    import pymupdf

    doc = pymupdf.open()
    for n in range(2):
        page = doc.new_page(width=595, height=842)
        page.insert_text((72, 80), f"A page of a report, number {n + 1}", fontsize=18)
    doc.save(path)


def _ingest(tmp_path, checkpoint) -> tuple[list[dict], dict]:
    src = tmp_path / "src"
    src.mkdir()
    _doc(src / "report.pdf")
    out = tmp_path / "out"
    assert main(["ingest", str(src), "--out", str(out), "--executor", "local", "--model", str(checkpoint),
                 "--weights", "hub", "--dtype", "float32", "--quiet"]) == 0
    pages = pq.read_table(out / "pages", columns=["width", "height"]).to_pylist()
    index = json.loads((out / "_index.json").read_text())["active"]["model"]
    return pages, index


def test_a_colpali_checkpoint_with_another_image_size(tmp_path, monkeypatch):
    side = 56  # the preset renders 112 x 112
    preset = json.loads(json.dumps(PRESETS["colpali-tiny"]))
    preset["vision"]["image_size"] = side
    monkeypatch.setitem(PRESETS, "colpali-tiny-56", preset)
    a = adapter_for(ModelSpec("colpali-tiny-56", weights="random"))
    a.load()
    ckpt = tmp_path / "colpali-56"
    a.model.save_pretrained(ckpt)
    a.processor.save_pretrained(ckpt)
    monkeypatch.delitem(PRESETS, "colpali-tiny-56")

    pages, index = _ingest(tmp_path, ckpt)
    embedder = adapter_for(ModelSpec(str(ckpt), weights="hub", dtype="float32"))
    embedder.load()
    assert embedder.processor.image_processor.size["height"] == side
    assert index["max_pixels"] == side * side
    assert pages and all(p["width"] * p["height"] <= side * side for p in pages)
    assert all(p["width"] * p["height"] > side * side // 2 for p in pages)


@pytest.mark.parametrize("longest", [64])
def test_a_colmodernvbert_checkpoint_with_another_longest_edge(tmp_path, longest):
    a = adapter_for(ModelSpec("colmodernvbert-tiny", weights="random"))  # the preset: 128 px
    a.load()
    ckpt = tmp_path / "cmvb"
    a.model.save_pretrained(ckpt)
    a.processor.save_pretrained(ckpt)
    conf_path = ckpt / "processor_config.json"
    conf = json.loads(conf_path.read_text())
    conf["image_processor"]["size"] = {"longest_edge": longest}
    conf_path.write_text(json.dumps(conf))

    pages, index = _ingest(tmp_path, ckpt)
    embedder = adapter_for(ModelSpec(str(ckpt), weights="hub", dtype="float32"))
    embedder.load()
    assert embedder.processor.image_processor.size["longest_edge"] == longest
    assert index["max_pixels"] == longest * longest * 3 // 4
    assert pages and all(p["width"] * p["height"] <= index["max_pixels"] for p in pages)
    assert all(p["width"] * p["height"] > index["max_pixels"] // 2 for p in pages)
