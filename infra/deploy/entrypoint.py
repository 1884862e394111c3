"""The `pagemill ingest` command line of a deployment, from the values: on Kubernetes the RayJob's
entrypoint, a `sh -c` on the head that takes the site settings from the pagemill-ingest ConfigMap
(each ${VAR:?} stops the job naming VAR when it is missing); on VMs the same options with the
settings written in.

    >>> ingest_words(dict(model="m", weights="hub", layouts=["mv-pool3"], milvus_index={}, milvus_layouts=[],
    ...   bulk_import_dir="", progress_interval_s=60, extra_args=[]), "", SITE_VARIABLES)[-4:]
    ['--progress-interval', '60', '--layouts', 'mv-pool3']
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex

from deploy.values import ValuesError

# The site settings: ConfigMap key -> (pagemill flag, the values' key under stores). The source is
# the positional argument.
SITE_VARIABLES = {"PAGEMILL_SOURCE": (None, "source"), "PAGEMILL_OUT": ("--out", "out"),
                  "PAGEMILL_VECTORS": ("--vectors", "vectors"), "PAGEMILL_COLLECTION": ("--collection", "collection")}
# Options of pagemill that the metrics work of issue 29 adds (pipelines/options.py does not declare
# them yet in every checkout): passed only when the values set them; the checks below skip them
# while the parser does not know them, and check them as soon as it does.
PENDING_FLAGS = {"--pushgateway"}
SAFE_WORD = re.compile(r"[\w@%+=:,./-]+")


def ingest_words(ingest: dict, pushgateway: str, site: dict) -> list[str]:
    """`ingest SOURCE --out ... <the values' options>`; ``site``: ConfigMap key -> the word that
    stands for it (a ${VAR:?} or the value itself)."""
    words = ["ingest"]
    for var, (flag, _) in SITE_VARIABLES.items():
        words += [site[var]] if flag is None else [flag, site[var]]
    words += ["--model", ingest["model"], "--weights", ingest["weights"], "--ray-address", "auto",
              "--summary", "/tmp/pagemill-summary.json", "--progress-interval", str(ingest["progress_interval_s"])]
    if ingest["layouts"]:
        words += ["--layouts", ",".join(ingest["layouts"])]
    for layout, index in ingest["milvus_index"].items():
        words += ["--milvus-index", f"{layout}={index}"]
    if ingest["milvus_layouts"]:
        words += ["--milvus-layouts", ",".join(ingest["milvus_layouts"])]
    if ingest["bulk_import_dir"]:
        words += ["--milvus-bulk-dir", ingest["bulk_import_dir"]]
    if pushgateway:
        words += ["--pushgateway", pushgateway]
    return words + list(ingest["extra_args"])


def _sh(word: str, where: str) -> str:
    """A word for the head's shell inside the entrypoint's single quotes: as it is, or in double quotes."""
    if SAFE_WORD.fullmatch(word) or re.fullmatch(r'"\$\{\w+:\?\}"', word):
        return word
    if "'" in word:
        raise ValuesError(f"{where}: {word!r}: a single quote cannot pass through the RayJob's entrypoint")
    return '"' + re.sub(r'([\\"$`])', r"\\\1", word) + '"'


def rayjob_entrypoint(ingest: dict, pushgateway: str, width: int = 96) -> list[str]:
    """The RayJob's entrypoint as the lines of a folded YAML scalar (they join with spaces)."""
    site = {var: f'"${{{var}:?}}"' for var in SITE_VARIABLES}
    words = [_sh(w, "ingest") for w in ingest_words(ingest, pushgateway, site)]
    chunks = ["sh -c 'exec pagemill " + words[0] + " " + words[1]]  # a flag stays on the line of its value
    for word in words[2:]:
        if chunks[-1].split()[-1].startswith("--") and not word.startswith("--"):
            chunks[-1] += " " + word
        else:
            chunks.append(word)
    chunks[-1] += "'"
    lines = [chunks[0]]
    for chunk in chunks[1:]:
        if len(lines[-1]) + 1 + len(chunk) > width:
            lines.append(chunk)
        else:
            lines[-1] += " " + chunk
    return lines


def vm_command(ingest: dict, pushgateway: str, stores: dict, vectors: str) -> str:
    site = {var: (vectors if key == "vectors" else stores[key]) for var, (_, key) in SITE_VARIABLES.items()}
    return shlex.join(["pagemill", *ingest_words(ingest, pushgateway, site)])


def without_pending(argv: list[str], known: set[str]) -> list[str]:
    """argv without the pending flags (and their values) that ``known`` does not have."""
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in PENDING_FLAGS and word not in known:
            skip = True
        else:
            out.append(word)
    return out


def ingest_flags(parser) -> set[str]:
    """Every flag `pagemill ingest` takes, from its parser."""
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {flag for action in sub.choices["ingest"]._actions for flag in action.option_strings}


def check_with_pagemill(argv: list[str]) -> str | None:
    """pagemill's own parser on the words (``ingest ...``): None when it takes them, else its
    message; None also when pagemill is not importable here (nothing to check with)."""
    try:
        from pipelines.cli import build_parser
    except ImportError:
        return None
    parser = build_parser()
    known = ingest_flags(parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(without_pending(argv, known))
    except SystemExit:
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        return lines[-1] if lines else "refused"
    return None
