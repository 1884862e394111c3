"""Run the benchmarks side by side and write their Markdown tables for the README.

    python -m benchmarks [--out benchmarks/results/latest.md]

(``python -m benchmarks.gpu`` is separate: it is meant for a GPU node.)
"""

from __future__ import annotations

import argparse
import platform
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import memory, pipeline, pool, render


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/latest.md")
    args = ap.parse_args()
    parts = [f"# pagemill benchmarks, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"{platform.machine()} {platform.processor() or ''}".strip()]
    for name, mod in (("render", render), ("pool", pool), ("pipeline", pipeline), ("memory", memory)):
        parts += ["", f"## {name}", "", mod.main([])]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
