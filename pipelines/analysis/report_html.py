"""The report as HTML with two PNG charts (matplotlib, headless)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from pipelines.analysis.costs import human_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chart_bytes_vs_fidelity(report: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in report["layouts"]:
        f = r.get("fidelity") or {}
        y = f.get("recall_at_10")
        x = r["parquet_bytes_per_page"]["measured"]
        if y is None:
            continue
        ax.scatter(x, y, s=40)
        ax.annotate(r["layout"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if not any((r.get("fidelity") or {}).get("recall_at_10") is not None for r in report["layouts"]):
        ax.text(0.5, 0.5, "no fidelity measured yet:\nrun `pagemill fidelity OUT`\n(or ingest with --fidelity-queries N)",
                ha="center", va="center", transform=ax.transAxes, fontsize=11)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per page (Parquet, measured; log scale)")
    ax.set_ylabel("recall@10 of the full multi-vector top-10")
    ax.set_ylim(0, 1.05)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("Storage per page vs fidelity, per layout")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_cost_vs_pages(report: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    sizes = np.logspace(4, 9, 30)
    for r in report["layouts"]:
        any_n = next(iter(r["projections"].values()))
        per_page = any_n["monthly_cost_usd"] / any_n["pages"]
        ax.plot(sizes, per_page * sizes, label=r["layout"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pages")
    ax.set_ylabel("USD per month (object storage + Milvus memory and disk)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Monthly cost vs corpus size")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_html(report: dict, text_table: str, path: str) -> list[Path]:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    charts = [out.with_name(out.stem + "-bytes-vs-fidelity.png"), out.with_name(out.stem + "-cost-vs-pages.png")]
    chart_bytes_vs_fidelity(report, charts[0])
    chart_cost_vs_pages(report, charts[1])
    rows = "".join(
        f"<tr><td>{html.escape(r['layout'])}</td><td>{r['vectors_per_page']['mean']:.1f}</td>"
        f"<td>{human_bytes(r['parquet_bytes_per_page']['measured'])}</td>"
        f"<td>{human_bytes(r['parquet_bytes_per_page']['predicted'])}</td>"
        f"<td>{human_bytes(r['milvus']['memory_bytes_per_page'])}</td>"
        f"<td>{(r.get('fidelity') or {}).get('recall_at_10', '-')}</td></tr>"
        for r in report["layouts"])
    out.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>pagemill storage report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:4px 10px;text-align:right}}
td:first-child{{text-align:left}}pre{{background:#f5f5f5;padding:1em;overflow-x:auto}}</style></head><body>
<h1>pagemill storage report</h1>
<table><tr><th>layout</th><th>vectors/page</th><th>Parquet/page</th><th>predicted</th><th>Milvus memory/page</th>
<th>recall@10</th></tr>{rows}</table>
<h2>Charts</h2><img src="{charts[0].name}" alt="bytes per page vs fidelity"><img src="{charts[1].name}" alt="cost vs pages">
<h2>Full table</h2><pre>{html.escape(text_table)}</pre></body></html>""")
    return charts
