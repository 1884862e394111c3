"""Configuration validation and the CLI's error behaviour (one line, non-zero, no traceback)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REPO, pagemill_cmd

from pipelines.cli import build_parser
from pipelines.ingest.config import ConfigError, build_config, load_config_file


def test_config_file_and_flag_precedence(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("source: /data\nout: /out\nbatch-size: 4\nexclude: ['drafts/*']\nexecutor: local\n")
    cfg = build_config(load_config_file(str(f)), {"batch_size": 16, "out": None})
    assert (cfg.source, cfg.out, cfg.batch_size, cfg.exclude, cfg.executor) == ("/data", "/out", 16, ["drafts/*"], "local")
    from operators.stores import vectors_uri

    assert vectors_uri(cfg.store, cfg.out) == "/out/milvus.db"


@pytest.mark.parametrize("text,key", [
    ("source: a\nout: b\nbatch_sise: 4\n", "batch_sise"),
    ("source: a\nout: b\nbatch_size: four\n", "batch_size"),
    ("source: a\nout: b\nexecutor: spark\n", "executor"),
    ("source: a\nout: b\npage_timeout_s: -1\n", "page_timeout_s"),
    ("out: b\n", "source"),
])
def test_bad_config_names_the_key(tmp_path, text, key):
    f = tmp_path / "job.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=key):
        build_config(load_config_file(str(f)), {})


def _run(*args, env=None):
    return subprocess.run(pagemill_cmd(*args), cwd=REPO, capture_output=True, text=True, env=env, timeout=120)


def test_cli_bad_config_one_line_exit_2(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("colection: x\n")
    r = _run("ingest", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(f))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "unknown config key 'colection'" in r.stderr and "Traceback" not in r.stderr


def test_cli_missing_source_fails_fast(tmp_path):
    r = _run("ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--executor", "local")
    assert r.returncode == 2
    assert "source folder does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()  # nothing created before the inputs are known good


def test_cli_unreachable_milvus_fails_fast_without_secret(tmp_path):
    import os

    import pymupdf

    (tmp_path / "src").mkdir()
    doc = pymupdf.open()
    doc.new_page()
    doc.save(tmp_path / "src" / "one.pdf")
    env = dict(os.environ, MILVUS_TOKEN="root:s3cr3t-t0ken")
    r = _run("ingest", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--executor", "local",
             "--milvus", "http://127.0.0.1:9", env=env)
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.startswith("pagemill:")]
    assert len(lines) == 1 and "cannot use Milvus at http://127.0.0.1:9" in lines[0]
    assert "s3cr3t" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "_ledger").exists()


def test_every_cli_command_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        assert f"pagemill {name}" in readme, f"README lacks `pagemill {name}`"
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in readme, f"README lacks {flag} of `pagemill {name}`"


def test_the_command_leaves_through_pythons_exit_without_cpps(tmp_path):
    """``pagemill`` (the console script and ``python -m``) ends with Python's exit steps (the
    atexit handlers: Ray's shutdown, Milvus Lite's server, temporary files) and then ``os._exit``:
    Arrow's thread pools can abort a finished command from C++'s static destructors (exit 134,
    apache/arrow#34314), so none run. Its output and exit status are the command's, and an executor
    a library left open does not keep it from ending."""
    import json
    import os
    import sys
    from pathlib import Path

    from conftest import CORPUS

    from pipelines.cli import main

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.pdf").write_bytes((CORPUS / "tables/camelot-dev+camelot__us-005.pdf").read_bytes())
    (src / "locked.pdf").write_bytes((CORPUS / "encrypted/Unstructured-IO+unstructured__password.pdf").read_bytes())
    out = tmp_path / "out"
    assert main(["ingest", str(src), "--out", str(out), "--executor", "local", "--quiet",
                 "--model", "sim:colqwen2-tiny,text:sim:all-MiniLM-L6-v2"]) == 0
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(  # an atexit handler of the process, as Ray and Milvus Lite register,
        "import atexit, os, sys\n"           # and an executor left open, as a library may leave one
        "atexit.register(lambda: open(os.environ['MARK'], 'a').write(' '.join(sys.argv[1:2]) + '\\n'))\n"
        "import concurrent.futures\n"
        "_open = concurrent.futures.ThreadPoolExecutor(1)\n"
        "_open.submit(int).result()\n")
    mark = tmp_path / "atexit.txt"
    env = dict(os.environ, MARK=str(mark), PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    script = Path(sys.executable).with_name("pagemill")  # what pyproject's [project.scripts] installed
    for cmd in ([str(script), "quarantine", str(out), "--json"], pagemill_cmd("quarantine", str(out), "--json")):
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        assert [q["reason"] for q in json.loads(r.stdout)] == ["encrypted"]
    r = subprocess.run(pagemill_cmd("quarantine", str(tmp_path / "nowhere")), cwd=REPO, capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert mark.read_text().split("\n")[:3] == ["quarantine", "quarantine", "quarantine"]


def test_a_failed_command_leaves_no_empty_log(tmp_path):
    """What libraries print goes to a log in TMPDIR for the command's length; a failed command
    keeps it only when it holds something (its error line names it), never an empty file."""
    import os

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    for args in (("quarantine", str(tmp_path / "nowhere")), ("ingest", str(tmp_path / "nowhere"), "--out",
                                                             str(tmp_path / "out"))):
        r = _run(*args, env=env)
        assert r.returncode == 2 and "details:" not in r.stderr, r.stderr
    assert list(tmp.iterdir()) == []
