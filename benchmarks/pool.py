"""Hierarchical token pooling throughput, side by side in one run.

    python -m benchmarks.pool [--pages 40] [--patches 750] [--factor 3] [--repeat 3]

1. pagemill: ``hierarchical_pool`` (condensed cosine distances, fastcluster Ward, scipy cut), one
   page after another as the embedding actor runs it; also over a thread pool, to show that
   fastcluster holds the GIL (threads do not help; Ray's actors are the parallelism).
2. colpali-engine's recipe (the reference users run today): per page, similarity by matrix
   product, the *square* distance matrix handed to ``scipy.cluster.hierarchy.linkage``.
3. scipy on the condensed matrix, one page at a time (the reference computation the tests
   compare clusters with).

Pages are synthetic ColQwen2-shaped multi-vectors (750 patches x 128, with cluster structure).
Target: pagemill >= 2x the colpali-engine recipe on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from operators.pooling import cluster_means, hierarchical_pool, normalise, reference_clusters


def synthetic_pages(n_pages: int, n_patches: int, dim: int = 128, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    pages = []
    for _ in range(n_pages):
        centres = normalise(rng.standard_normal((n_patches // 8, dim)))
        x = centres[rng.integers(0, len(centres), n_patches)] + 0.35 * rng.standard_normal((n_patches, dim))
        pages.append(normalise(x).astype(np.float32))
    return pages


def pagemill(pages, factor, workers):
    def one(p):
        return hierarchical_pool(p, 0, len(p), factor)

    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, pages))
    return [one(p) for p in pages]


def colpali_recipe(pages, factor):
    from scipy.cluster.hierarchy import fcluster, linkage

    out = []
    for p in pages:
        sim = p @ p.T
        dist = 1 - sim
        z = linkage(dist, metric="euclidean", method="ward")  # the square matrix, as colpali-engine does
        labels = fcluster(z, t=max(1, len(p) // factor), criterion="maxclust")
        out.append(cluster_means(p, labels))
    return out


def scipy_condensed(pages, factor):
    return [cluster_means(p, reference_clusters(p, max(1, len(p) // factor))) for p in pages]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=40)
    ap.add_argument("--patches", type=int, default=750)
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    pages = synthetic_pages(args.pages, args.patches)
    workers = os.cpu_count() or 1
    methods = {
        "pagemill hierarchical_pool": lambda: pagemill(pages, args.factor, 1),
        f"pagemill hierarchical_pool, {workers} threads": lambda: pagemill(pages, args.factor, workers),
        "colpali-engine recipe (square matrix to scipy)": lambda: colpali_recipe(pages[: max(4, args.pages // 4)],
                                                                                 args.factor),
        "scipy on the condensed matrix": lambda: scipy_condensed(pages, args.factor),
    }
    rates = {k: [] for k in methods}
    for _ in range(args.repeat):
        for name, fn in methods.items():
            t = time.perf_counter()
            n = len(fn())
            rates[name].append(n / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    ours = next(iter(med.values()))
    lines = [f"Pooling: {args.pages} pages x {args.patches} patches x 128, factor {args.factor}, median of "
             f"{args.repeat} interleaved runs, {workers} CPUs", "",
             "| method | pages/s | pagemill ÷ method |", "|---|---:|---:|"]
    for k, v in med.items():
        lines.append(f"| {k} | {v:.1f} | {ours / v:.2f}× |")
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
