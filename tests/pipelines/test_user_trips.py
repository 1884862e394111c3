"""What a user still tripped on, each as a test: text search that its own rerank undid, an index
claimed before anything was in it, calibrate and plan that did not fit, raw errors, read-only
OUTs, a fidelity of another model, misleading messages, silence and counters that disagree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, read_only
from test_first_hour import one_line, run

from pipelines.cli import main


@pytest.fixture(scope="module")
def pdfs(small_corpus, tmp_path_factory):
    src = tmp_path_factory.mktemp("trip-pdfs")
    for uri in sorted(small_corpus.ok_pages)[:3]:
        path = Path(uri.replace("file://", "").replace("%2B", "+"))
        shutil.copy(path, src / path.name)
    return src


# -- 1. --stage1 text is not undone by a rerank of random weights ----------------------------------


def test_the_text_layers_order_stands_when_the_visual_weights_are_random(text_indexed, capsys):
    from operators.io.store import LocalStore
    from operators.stores.parquet import read_table
    from pipelines.analysis.fidelity import sentences
    from pipelines.out.manifest import live_page_files

    store = LocalStore(text_indexed)
    table = read_table(store.read_bytes(live_page_files(store)[0]), columns=["page_id", "text"])
    picked = [(pid, next(s for s in sentences(t) if len(s.split()) >= 8)) for pid, t in
              zip(table["page_id"].to_pylist(), table["text"].to_pylist()) if t and sentences(t)][:3]
    assert picked
    for pid, sentence in picked:
        assert main(["search", sentence, "--out", str(text_indexed), "--stage1", "text", "-k", "3", "--json"]) == 0
        out = capsys.readouterr()
        found = json.loads(out.out)
        assert found["results"][0]["page_id"] == pid  # the copied sentence's page, first
        assert any("random weights: a MaxSim rerank would be noise" in w for w in found["warnings"])


def test_a_rerank_keeps_the_stage1_winner_unless_it_puts_it_in_its_bottom_half():
    from pipelines.index.search import decide_rerank, fuse_orders

    stage1 = [("a", 9.0), ("b", 8.0), ("c", 7.0), ("d", 6.0)]
    assert fuse_orders(stage1, [("b", 5.0), ("a", 4.0), ("c", 3.0), ("d", 2.0)])[0][0] == "a"  # a: 2nd of 4
    assert fuse_orders(stage1, [("b", 5.0), ("c", 4.0), ("d", 3.0), ("a", 2.0)])[0][0] == "b"  # a: last: a reason
    assert decide_rerank("auto", "auto", text_stage1=True, random_weights=True)[:2] == ("none", "fuse")
    assert decide_rerank("auto", "auto", text_stage1=True, random_weights=False)[:2] == ("mv", "fuse")
    assert decide_rerank("auto", "auto", text_stage1=False, random_weights=True)[:2] == ("mv", "replace")


# -- 2. a run that commits nothing claims nothing ------------------------------------------------------


@pytest.mark.slow
def test_a_run_that_commits_nothing_does_not_claim_the_out(pdfs, tmp_path):
    out = tmp_path / "out"
    # a refused option: nothing is created at all
    r = run("ingest", str(pdfs), "--out", str(out), "--executor", "local", "--milvus-index", "mv=IVF_PQ")
    assert r.returncode == 2 and "cannot use IVF_PQ on Milvus Lite" in one_line(r) and not out.exists()
    # an empty source: one line, nothing created
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run("ingest", str(empty), "--out", str(out), "--executor", "local")
    assert r.returncode == 2 and "no documents found under" in one_line(r) and not out.exists()
    # killed before its first commit, with a page vector of 32 dims: no identity recorded
    r = run("ingest", str(pdfs), "--out", str(out), "--executor", "local", "--model",
            "colqwen2-tiny,sv:qwen3-vl-embedding-tiny@32", env={"PAGEMILL_KILL_AT": "embedded:1"}, timeout=300)
    assert r.returncode == -9 and not (out / "_index.json").exists()
    assert (out / "milvus.db").exists()  # its collections were made, and hold nothing
    # the run the user meant, another model and 16 dims: not refused (the empty collections made anew)
    r = run("ingest", str(pdfs), "--out", str(out), "--executor", "local", "--model",
            "colpali-tiny,sv:qwen3-vl-embedding-tiny@16", "--quiet", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    index = json.loads((out / "_index.json").read_text())["active"]
    assert index["model"]["name"] == "colpali-tiny" and index["sv_model"]["dim"] == 16


def test_status_during_a_first_run_says_it_is_under_way(tmp_path):
    from operators.io.store import LocalStore
    from pipelines.out.lock import RunLock

    out = tmp_path / "out"
    lock = RunLock(LocalStore(out), "20261203T000000Z-abcdef", lease_s=300)
    lock.acquire()
    try:
        r = run("status", str(out))
        assert r.returncode == 0 and "a first run is under way (run 20261203T000000Z-abcdef" in r.stdout
        r = run("search", "anything", "--out", str(out))
        assert r.returncode == 2 and "a first run is under way" in one_line(r)
    finally:
        lock.release()


# -- 3. calibrate and plan fit ---------------------------------------------------------------------------


def test_a_calibration_plans_its_own_model_and_says_what_works_for_another(tmp_path):
    calib = tmp_path / "calib.json"
    r = run("calibrate", "--synthetic", "--model", "colqwen2-tiny", "--pages", "4", "--batch-size", "2", "--out",
            str(calib), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    progress = [line for line in r.stderr.splitlines() if line.startswith("[pagemill] calibrate:")]
    assert any("warm-up batch" in line and "about" in line for line in progress)
    assert any(line.startswith("[pagemill] calibrate: embedded 4/4 pages") for line in progress)
    for args in ([], ["--model", "colqwen2-tiny"]):
        r = run("plan", "--calibration", str(calib), "--json", *args)
        assert r.returncode == 0, r.stderr
        plan = json.loads(r.stdout)
        assert plan["model"] == "colqwen2-tiny" and plan["compute"]["gpu_pages_per_s"] > 0
    r = run("plan", "--model", "colqwen2", "--calibration", str(calib))
    assert r.returncode == 2 and "pagemill plan --model colqwen2-tiny --calibration" in one_line(r)


def test_every_preset_the_models_take_is_one_plan_knows():
    from operators.models import PRESETS
    from operators.models.sv import SV_PRESETS
    from pipelines.analysis.capacity import plan

    for name in [*PRESETS, *SV_PRESETS, "sim:colqwen2@50"]:
        p = plan(preset=name, pages=1000)
        assert p["vectors_per_page"] >= 1 and p["dim"] >= 16, name


def test_calibrate_on_a_cpu_measures_a_few_pages_of_a_billion_parameter_model(monkeypatch):
    from operators.models import ModelSpec
    from pipelines.analysis import calibrate as cal

    assert cal.parameters(ModelSpec("colqwen2")) > 2e9  # counted on the meta device: nothing allocated
    small = cal.parameters(ModelSpec("colqwen2-tiny"))
    monkeypatch.setattr(cal, "CPU_MAX_PARAMETERS", small - 1)  # colqwen2-tiny plays the big model here
    said = []
    profile = cal.calibrate(ModelSpec("colqwen2-tiny", device="cpu"), n_pages=16, source=None, say=said.append)
    assert profile["pages"] == cal.CPU_BIG_PAGES and profile["batch_size"] == 1
    assert "and this run is on a CPU: measuring 2 pages one at a time" in said[0]


# -- 4, 5, 6, 7. one line, exit 2; read-only OUTs read ----------------------------------------------------


@pytest.fixture(scope="module")
def small_out(pdfs, tmp_path_factory):
    out = tmp_path_factory.mktemp("trip-out") / "out"
    r = run("ingest", str(pdfs), "--out", str(out), "--executor", "local", "--quiet", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.mark.slow
def test_raw_errors_are_one_line(small_out, pdfs, tmp_path):
    r = run("report", str(small_out), "--pages", "1M,250k", "--json")
    assert r.returncode == 0 and list(json.loads(r.stdout)["layouts"][0]["projections"]) == ["1000000", "250000"]
    r = run("search", "anything", "--out", str(small_out), "--rerank", "mv-pool3")
    assert r.returncode == 2 and "not a layout of this index" in one_line(r)
    r = run("ingest", str(pdfs), "--out", str(small_out), "--layout", "mv-pool3")  # not --layouts
    assert r.returncode == 2 and "unrecognized arguments: --layout" in one_line(r)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    r = run("ingest", str(pdfs), "--out", str(afile), "--executor", "local")
    assert r.returncode == 2 and "is a file, not a folder" in one_line(r)
    ro = tmp_path / "read-only"
    ro.mkdir()
    r = read_only(ro, "ingest", str(pdfs), "--out", str(ro / "out"), "--executor", "local")
    assert r.returncode == 2 and "Read-only file system" in one_line(r) and not (ro / "out").exists()
    r = read_only(ro, "ingest", str(pdfs), "--out", str(ro), "--executor", "local")
    assert r.returncode == 2 and "a read-only file system" in one_line(r)


def test_one_pdf_as_the_source_is_indexed(pdfs, tmp_path):
    one = sorted(pdfs.glob("*.pdf"))[0]
    out = tmp_path / "out"
    assert main(["ingest", str(one), "--out", str(out), "--executor", "local", "--quiet"]) == 0
    from conftest import read_pages

    assert set(read_pages(out)["source_uri"].to_pylist()) == {one.resolve().as_uri()}


@pytest.mark.slow
def test_a_read_only_out_is_read(small_out):
    before = sorted(p.relative_to(small_out).as_posix() for p in small_out.rglob("*"))
    for cmd in (["status", str(small_out)], ["search", "a table", "--out", str(small_out), "-k", "2"],
                ["report", str(small_out)], ["quarantine", str(small_out)]):
        r = read_only(small_out, *cmd)
        assert r.returncode == 0, (cmd, r.stderr[-2000:])
        if cmd[0] != "quarantine":
            assert "is read-only: Milvus Lite reads a copy of it" in r.stderr
    assert sorted(p.relative_to(small_out).as_posix() for p in small_out.rglob("*")) == before


def test_fidelity_of_another_model_is_refused(small_out):
    r = run("fidelity", str(small_out), "--model", "colpali-tiny", "--queries", "3")
    assert r.returncode == 2 and "holds an index of colqwen2-tiny" in one_line(r)
    assert not (small_out / "_fidelity").exists()


# -- 8. what a run says --------------------------------------------------------------------------------


def test_a_run_says_what_starts_its_counters_agree_and_it_ends_with_a_diagnosis(small_out, pdfs, tmp_path):
    from pipelines.ingest.progress import Progress

    out = tmp_path / "out"
    r = run("ingest", str(pdfs), "--out", str(out), "--executor", "local", "--summary", str(tmp_path / "s.json"),
            "--quiet", timeout=300)
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    starting = next(i for i, line in enumerate(lines) if line.startswith("[pagemill] starting: "))
    assert "models: colqwen2-tiny (random weights)" in lines[starting]
    assert starting < min(i for i, line in enumerate(lines) if " · committed " in line)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["units"]["committed"] == 1 and summary["bottleneck"].startswith("bottleneck (one unit")
    assert summary["stages"]["first_commit_s"] <= summary["run_s"]
    p = Progress(2, stream=open("/dev/null", "w"))
    p.update(42, 0)
    line = p.line(counters={"render": 37, "embed": 7})
    assert "rendered 42 · embedded 42 · committed 42 pages" in line  # a page committed was embedded, and rendered


def test_the_readers_extra_installs_what_the_readme_example_needs():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {x.split(">")[0] for x in extras["readers"]} == {"duckdb", "polars"}
    readme = (REPO / "README.md").read_text()
    assert "pip install -e '.[readers]'" in readme and "--index-url https://download.pytorch.org/whl/cpu" in readme
