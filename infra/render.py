"""Render pagemill's deployment from one values file: every manifest under infra/k8s/ and
infra/ray-up/cluster.yaml comes from infra/values.yaml (the committed ones are its rendered output;
tests/infra checks that they are up to date).

    python infra/render.py                                    # the committed manifests
    python infra/render.py --values my-values.yaml --out DIR  # your site's: DIR/k8s/, DIR/ray-up/
    python infra/render.py --check                            # exit 1 if a committed manifest is stale
    python infra/render.py --print image                      # the image the manifests run

A bad values file stops with one line naming the key, exit 2. Needs PyYAML; pagemill's own
checkout (importable next to this folder) checks the options and finds the model's checkpoints.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

INFRA = Path(__file__).resolve().parent
REPO = INFRA.parent
# deploy/ beside this file, and the pagemill of this checkout (its options, its model presets)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(INFRA) not in sys.path:
    sys.path.append(str(INFRA))

from deploy import manifests, values  # noqa: E402
from deploy.template import TemplateError  # noqa: E402

RENDERED_MARK = "# Rendered from "


def project_pins() -> tuple[str, str]:
    """pyproject.toml's version and its Ray pin (the image's tag and rayVersion)."""
    text = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', text, re.M).group(1)
    ray = re.search(r'"ray\[[\w,]+\]==([\d.]+)"', text).group(1)
    return version, ray


def render(values_path: Path | None = None, where: str = "infra") -> dict[str, str]:
    """{path under the output folder: text} for the values at ``values_path`` (None: the committed)."""
    version, ray = project_pins()
    source = "infra/values.yaml" if values_path is None else str(values_path)
    return manifests.render(values.load(values_path), where, source, version, ray)


def stale(files: dict[str, str], out: Path) -> list[str]:
    """What differs under ``out`` from ``files``: changed or missing files, and rendered ones that
    these values no longer produce."""
    found = [p for p, text in files.items() if not (out / p).is_file() or (out / p).read_text() != text]
    for path in sorted(out.glob("*/*.yaml")):
        rel = path.relative_to(out).as_posix()
        if rel not in files and path.read_text().startswith(RENDERED_MARK):
            found.append(rel)
    return found


def write(files: dict[str, str], out: Path) -> list[str]:
    changed = stale(files, out)
    for rel in changed:
        path = out / rel
        if rel in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[rel])
        else:
            path.unlink()  # rendered before, not by these values (the model cache turned off)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python infra/render.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--values", type=Path, help="a values file over infra/values.yaml (default: that alone)")
    p.add_argument("--out", help="the folder to write k8s/ and ray-up/ into (default: infra)")
    p.add_argument("--check", action="store_true", help="write nothing: exit 1 if a file differs from the render")
    p.add_argument("--print", dest="show", metavar="KEY", choices=["image"], help="print a rendered value: image")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else INFRA
    where = args.out.rstrip("/") if args.out else "infra"
    try:
        if args.show:
            version, _ = project_pins()
            v = values.load(args.values)
            print(f"{v['image']['repository']}:{v['image']['tag'] or version}")
            return 0
        files = render(args.values, where)
    except (values.ValuesError, TemplateError) as e:
        print(f"render: {e}", file=sys.stderr)
        return 2
    if args.check:
        differ = stale(files, out)
        for rel in differ:
            print(f"render: {out / rel} is not what the values render: python infra/render.py", file=sys.stderr)
        return 1 if differ else 0
    for rel in write(files, out):
        print(f"{os.path.join(where, rel)}: {'written' if rel in files else 'removed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
