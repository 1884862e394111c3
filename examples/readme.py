"""Every transcript and example table in README.md, produced by running the commands today.

    python -m examples.readme                 # regenerate every region (runs ingests and benchmarks: long)
    python -m examples.readme --only plan-colpali,ingest
    python -m examples.readme --check         # re-run the deterministic regions, fail on a difference

The README marks each generated region with ``<!-- readme: NAME -->`` and ``<!-- /readme: NAME -->``;
everything between the marks is replaced by what NAME's generator prints. The deterministic
regions (``pagemill plan``, which reads no clock and no machine but its memory size, and the table
of ingest options, from pipelines/options.py) are
re-run by the test suite (tests/pipelines/test_readme.py), so a change of the cost model that
is not carried into the README fails there. The others (transcripts of runs, benchmark tables)
are today's output when this script last ran over them: they carry times and run ids.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CORPUS = Path(os.environ.get("PAGEMILL_CORPUS", REPO.parent / "shared" / "corpus"))
REGION = re.compile(r"(<!-- readme: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /readme: (?P=name) -->)", re.S)
MACHINE_MEMORY = re.compile(r"this machine's [\d.]+ [KMGT]?B of memory")


def pagemill(*args: str, cwd: Path, env: dict | None = None, check: bool = True) -> tuple[str, str]:
    """Run ``pagemill ARGS`` as a user would (a fresh process), in ``cwd``: (stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}, timeout=3600)
    if check and r.returncode != 0:
        raise SystemExit(f"pagemill {' '.join(args)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return r.stdout, r.stderr


def block(lines: list[str]) -> str:
    return "```\n" + "\n".join(lines).rstrip() + "\n```\n"


def transcript(args: list[str], cwd: Path, stdout_filter=None, stderr: bool = True) -> list[str]:
    out, err = pagemill(*args, cwd=cwd)
    shown = " ".join(f'"{a}"' if " " in a else a for a in args)
    lines = [f"$ pagemill {shown}"]
    if stderr:
        lines += [line for line in err.splitlines() if line.startswith("[pagemill]") or line.startswith("pagemill:")]
    lines += (stdout_filter(out) if stdout_filter else out.rstrip().splitlines())
    return lines


# ---------------------------------------------------------------------------------------------
# Deterministic: the plan


def plan_colpali(_ctx) -> str:
    return block(transcript(["plan", "--model", "colpali", "--layouts", "mv-pool3,mv-bin,sv-mean"], REPO))


def plan_single(_ctx) -> str:
    return block(transcript(["plan", "--model", "qwen3-vl-embedding-2b", "--pages", "10M"], REPO))


def plan_nemo(_ctx) -> str:
    return block(transcript(["plan", "--model", "nemoretriever-colembed-3b", "--vectors-per-page", "1676",
                             "--pages", "1M"], REPO))


def ingest_options(_ctx) -> str:
    from pipelines.options import readme_table

    return readme_table("ingest")


DETERMINISTIC = {"plan-colpali": plan_colpali, "plan-single": plan_single, "plan-nemo": plan_nemo,
                 "ingest-options": ingest_options}


# ---------------------------------------------------------------------------------------------
# Runs: the Quickstart's job and a run of the dev corpus' tables


class Context:
    """A scratch folder where the commands run with the README's relative paths."""

    def __init__(self, root: Path):
        self.root = root
        self._tables = False
        self._demo = False

    def demo(self) -> Path:
        if not self._demo:
            shutil.copytree(REPO / "examples" / "pdfs", self.root / "examples" / "pdfs")
            self._demo = True
        return self.root

    def tables(self) -> Path:
        """``tables/``: the dev corpus' table documents of at most 12 pages, ingested into
        ``demo-tables`` with the layouts the fidelity and report examples compare."""
        if not self._tables:
            from benchmarks.pipeline import sample

            (self.root / "scratch").mkdir()
            src = sample(CORPUS, "tables", 170, self.root / "scratch")
            shutil.move(str(src), self.root / "tables")
            pagemill("ingest", "tables", "--out", "demo-tables", "--quiet", "--layouts",
                     "mv-pool3,mv-rowcol,mv-int8,mv-bin,mv-pool2-bin,sv-fde", cwd=self.root)
            self._tables = True
        return self.root


SUMMARY_KEYS = ("documents", "pages", "milvus", "model", "stages", "wall_s", "pages_per_s", "index")


def trimmed_summary(out: str) -> list[str]:
    """The run summary's main keys, one line each (the whole summary is in OUT/_runs/)."""
    s = json.loads(out)
    lines = ["{"]
    for k in SUMMARY_KEYS:
        if k not in s:
            continue
        v = s[k]
        if k == "milvus":
            v = {x: v[x] for x in ("row_counts", "server", "mv_mode") if x in v}
        if k == "stages":
            v = {x: {"busy_s": y["busy_s"], "utilisation": y.get("utilisation")} for x, y in v.items()
                 if isinstance(y, dict)}
        lines.append(f'  "{k}": {json.dumps(v, sort_keys=True)},')
    lines.append("  ...")
    lines.append("}")
    return lines


def ingest(ctx: Context) -> str:
    cwd = ctx.demo()
    lines = transcript(["ingest", "examples/pdfs", "--out", "demo-out"], cwd, trimmed_summary)
    lines += transcript(["ingest", "examples/pdfs", "--out", "demo-out", "--quiet"], cwd)
    return block(lines)


def fidelity(ctx: Context) -> str:
    return block(transcript(["fidelity", "demo-tables", "--queries", "30"], ctx.tables()))


def report(ctx: Context) -> str:
    return block(transcript(["report", "demo-tables"], ctx.tables()))


def search(ctx: Context) -> str:
    return block(transcript(["search", "revenue by region", "--out", "demo-tables", "-k", "5"], ctx.tables()))


def calibrate(ctx: Context) -> str:
    return block(transcript(["calibrate", "examples/pdfs", "--pages", "8"], ctx.demo()))


RUNS = {"ingest": ingest, "calibrate": calibrate, "fidelity": fidelity, "report": report, "search": search}


# ---------------------------------------------------------------------------------------------
# Benchmarks: each module's main() returns its Markdown table


def benchmark(module: str, *argv: str):
    def run(_ctx) -> str:
        import importlib

        return importlib.import_module(f"benchmarks.{module}").main(list(argv)).rstrip() + "\n"

    return run


BENCHMARKS = {"bench-render": benchmark("render"), "bench-pool": benchmark("pool"),
              "bench-pipeline": benchmark("pipeline", "--docs", "170"), "bench-memory": benchmark("memory", "--docs", "100"),
              "bench-fleet": benchmark("fleet"), "bench-ledger": benchmark("ledger"), "bench-text": benchmark("text", "--pages", "400", "--queries", "80"),
              "bench-stores": benchmark("stores"),
              "bench-archives": benchmark("archives"), "bench-page-cpu": benchmark("page_cpu"),
              "bench-server-write": benchmark("server_write"),
              "bench-plan-check": benchmark("plan_check")}

GENERATORS = {**DETERMINISTIC, **RUNS, **BENCHMARKS}


# ---------------------------------------------------------------------------------------------


def regions(text: str) -> dict[str, str]:
    return {m.group("name"): m.group("body") for m in REGION.finditer(text)}


def replace(text: str, name: str, body: str) -> str:
    def sub(m):
        return m.group(1) + body + m.group(4) if m.group("name") == name else m.group(0)

    return REGION.sub(sub, text)


def normalised(body: str) -> str:
    """What may differ between machines without the README being wrong: the memory size."""
    return MACHINE_MEMORY.sub("this machine's N GB of memory", body)


def check(text: str) -> list[str]:
    """The deterministic regions that differ from today's output (their names and a diff)."""
    import difflib

    found = regions(text)
    problems = [f"region {n!r} has no generator" for n in found if n not in GENERATORS]
    problems += [f"README lacks region {n!r}" for n in GENERATORS if n not in found]
    for name, gen in DETERMINISTIC.items():
        if name not in found:
            continue
        want = gen(None)
        if normalised(want) != normalised(found[name]):
            diff = "\n".join(difflib.unified_diff(found[name].splitlines(), want.splitlines(), "README", "today",
                                                  lineterm=""))
            problems.append(f"region {name!r} is not today's output (python -m examples.readme --only {name}):\n{diff}")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated region names")
    ap.add_argument("--check", action="store_true", help="re-run the deterministic regions and compare")
    args = ap.parse_args(argv)
    text = README.read_text()
    if args.check:
        problems = check(text)
        print("\n\n".join(problems) or "README examples are today's output")
        return 1 if problems else 0
    names = [n for n in (args.only or ",".join(GENERATORS)).split(",") if n]
    unknown = [n for n in names if n not in GENERATORS]
    if unknown:
        ap.error(f"unknown region(s): {', '.join(unknown)} (known: {', '.join(GENERATORS)})")
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(Path(tmp))
        for name in names:
            print(f"generating {name} ...", file=sys.stderr)
            text = replace(text, name, GENERATORS[name](ctx))
            README.write_text(text)  # region by region: a long run keeps what it finished
    return 0


if __name__ == "__main__":
    sys.exit(main())
