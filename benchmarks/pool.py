"""Hierarchical token pooling throughput, side by side in one run, on the same pages.

    python -m benchmarks.pool [--pages 40] [--patches 750] [--factor 3] [--repeat 5]

1. pagemill: ``hierarchical_pool`` (condensed cosine distances, fastcluster Ward, scipy cut), one
   page after another as the encode actor runs it; also over a thread pool of one thread per
   core, to show that fastcluster holds the GIL (threads do not help; Ray's actors are the
   parallelism).
2. colpali-engine's own ``HierarchicalTokenPooler`` (the reference users run today), at its
   default (``num_workers=None``: one page after another) and with ``num_workers`` = the cores
   (its thread pool). It needs the ``benchmark`` extra, installed without dependencies:
   ``pip install --no-deps 'colpali-engine==0.3.18'`` (see pyproject.toml). Only its pooling
   module is loaded (from the installed package's files, with torch and scipy), not the package,
   whose ``__init__`` imports its models (transformers, peft, ...).
3. scipy on the condensed matrix, one page at a time (the reference computation the tests
   compare clusters with).

Pages are synthetic ColQwen2-shaped multi-vectors (750 patches x 128, with cluster structure),
the same pages for every method. A sanity line compares the pooled outputs' shapes.
Target: pagemill >= 2x colpali-engine's pooler on 2 cores.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from operators.layouts.pooling import cluster_means, hierarchical_pool, normalise, reference_clusters

COLPALI_POOLING = "compression/token_pooling"
# The pooler's module and the two package modules it imports, in import order (none imports
# colpali_engine's models): ``from colpali_engine.x import y`` finds a module already in
# sys.modules without importing its parent packages.
COLPALI_MODULES = ("utils/torch_utils.py", f"{COLPALI_POOLING}/base_token_pooling.py",
                   f"{COLPALI_POOLING}/hierarchical_token_pooling.py")


def colpali_pooler_class():
    """colpali-engine's ``HierarchicalTokenPooler``, loaded from the installed package's files
    without importing ``colpali_engine/__init__.py`` (which imports its models)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("colpali-engine")
    except PackageNotFoundError:
        raise SystemExit("benchmarks.pool needs colpali-engine: pip install --no-deps 'colpali-engine==0.3.18' "
                         "(the benchmark extra; --no-deps: its dependencies pin transformers, peft and torch)") from None
    root = Path(dist.locate_file("colpali_engine"))
    module = None
    for rel in COLPALI_MODULES:
        name = "colpali_engine." + rel.removesuffix(".py").replace("/", ".")
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, root / rel)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
    return module.HierarchicalTokenPooler, dist.version


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


def colpali_engine(pooler, tensors, factor, num_workers):
    return pooler.pool_embeddings(tensors, pool_factor=factor, num_workers=num_workers)


def scipy_condensed(pages, factor):
    return [cluster_means(p, reference_clusters(p, max(1, len(p) // factor))) for p in pages]


def sanity(ours: list[np.ndarray], theirs: list, n_patches: int, factor: int) -> str:
    """Both poolers give every page at most max(1, n // factor) vectors of the same dimension."""
    k = max(1, n_patches // factor)
    a = [p.shape for p in ours]
    b = [tuple(t.shape) for t in theirs]
    assert len(a) == len(b), (len(a), len(b))
    assert all(0 < x[0] <= k and 0 < y[0] <= k and x[1] == y[1] for x, y in zip(a, b)), (a, b)

    def span(shapes):
        lo, hi = min(s[0] for s in shapes), max(s[0] for s in shapes)
        return f"{lo}" if lo == hi else f"{lo}-{hi}"

    same = sum(x == y for x, y in zip(a, b))
    return (f"sanity: {len(a)} pages pooled by both; vectors per page: pagemill {span(a)}, colpali-engine "
            f"{span(b)} (at most max(1, {n_patches} // {factor}) = {k}), dim {a[0][1]} both; same shape on "
            f"{same}/{len(a)} pages")


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=40)
    ap.add_argument("--patches", type=int, default=750)
    ap.add_argument("--factor", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    import torch

    Pooler, version = colpali_pooler_class()
    pooler = Pooler()
    pages = synthetic_pages(args.pages, args.patches)
    tensors = [torch.from_numpy(p) for p in pages]  # what a model hands the pooler; converted once, untimed
    cores = os.cpu_count() or 1
    methods = {
        "pagemill `hierarchical_pool`": lambda: pagemill(pages, args.factor, 1),
        f"pagemill `hierarchical_pool`, {cores} threads": lambda: pagemill(pages, args.factor, cores),
        f"colpali-engine {version} `HierarchicalTokenPooler`, default (`num_workers=None`)":
            lambda: colpali_engine(pooler, tensors, args.factor, None),
        f"colpali-engine {version} `HierarchicalTokenPooler`, `num_workers={cores}`":
            lambda: colpali_engine(pooler, tensors, args.factor, cores),
        "scipy on the condensed matrix": lambda: scipy_condensed(pages, args.factor),
    }
    pagemill(pages[:2], args.factor, 1)  # warm-up: lazy imports (fastcluster, scipy's cut), thread pools
    colpali_engine(pooler, tensors[:2], args.factor, cores)
    rates = {k: [] for k in methods}
    outputs = {}
    for _ in range(args.repeat):  # interleaved, so drift hits every method alike
        for name, fn in methods.items():
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
            assert len(out) == len(pages), f"{name} pooled {len(out)} pages, expected {len(pages)}"
            rates[name].append(len(out) / dt)
            outputs.setdefault(name, out)
    med = {k: statistics.median(v) for k, v in rates.items()}
    names = list(methods)
    ours = med[names[0]]
    lines = [f"Pooling: {args.pages} pages x {args.patches} patches x 128 (the same pages for every method), "
             f"factor {args.factor}, median of {args.repeat} interleaved runs, {cores} CPUs", "",
             "| method | pages/s | pagemill ÷ method |", "|---|---:|---:|"]
    for k, v in med.items():
        lines.append(f"| {k} | {v:.1f} | {ours / v:.2f}× |")
    lines += ["", f"pagemill ÷ colpali-engine: {ours / med[names[2]]:.2f}× its default, "
                  f"{ours / med[names[3]]:.2f}× with num_workers={cores} (target ≥ 2)",
              sanity(outputs[names[0]], outputs[names[2]], args.patches, args.factor)]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
