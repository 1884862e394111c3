"""Token pooling of a page's multi-vector: hierarchical (Ward) and row/column means.

Only the image-patch vectors are pooled; the model's other vectors (prompt and special tokens)
are kept as they are, before and after the pooled ones, in their original order.

Hierarchical pooling: Ward linkage on the cosine distances between the L2-normalised patch
vectors (the condensed distance matrix, as linkage expects: passing the square matrix makes
scipy treat its rows as observations, an O(n^3) detour that also clusters something else), cut
into ``max(1, n // factor)`` clusters; each cluster's mean is re-normalised.
"""

from __future__ import annotations

import numpy as np


def normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def condensed_cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """Condensed (upper-triangle, row-major) cosine distances of L2-normalised rows, as float64."""
    v = normalise(vectors.astype(np.float32))
    sim = v @ v.T
    iu = np.triu_indices(len(v), k=1)
    return np.clip(1.0 - sim[iu], 0.0, None).astype(np.float64)


def ward_clusters(vectors: np.ndarray, n_clusters: int) -> np.ndarray:
    """Cluster labels 1..k of Ward linkage on cosine distances (fastcluster, scipy's cut)."""
    from scipy.cluster.hierarchy import fcluster

    n = len(vectors)
    if n_clusters >= n:
        return np.arange(1, n + 1)
    if n_clusters <= 1:
        return np.ones(n, dtype=np.int64)
    try:
        import fastcluster

        z = fastcluster.linkage(condensed_cosine_distances(vectors), method="ward", preserve_input=False)
    except ImportError:  # same merges, about half the speed
        from scipy.cluster.hierarchy import linkage

        z = linkage(condensed_cosine_distances(vectors), method="ward")
    return fcluster(z, t=n_clusters, criterion="maxclust")


def reference_clusters(vectors: np.ndarray, n_clusters: int) -> np.ndarray:
    """The reference computation with scipy alone (for tests and the benchmark)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    v = normalise(vectors.astype(np.float64))
    z = linkage(np.clip(pdist(v, metric="cosine"), 0, None), method="ward")
    return fcluster(z, t=n_clusters, criterion="maxclust")


def cluster_means(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Re-normalised mean per label, in order of each cluster's first member (deterministic)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first)
    sums = np.zeros((len(first), vectors.shape[1]), np.float64)
    np.add.at(sums, inverse, vectors.astype(np.float64))
    counts = np.bincount(inverse).astype(np.float64)[:, None]
    return normalise((sums / counts)[order]).astype(np.float32)


def split_patches(vectors: np.ndarray, offset: int, n_patches: int):
    return vectors[:offset], vectors[offset : offset + n_patches], vectors[offset + n_patches :]


def hierarchical_pool(vectors: np.ndarray, offset: int, n_patches: int, factor: int) -> np.ndarray:
    """One page: keep non-patch vectors, pool the patches into ``max(1, n // factor)`` vectors."""
    if factor <= 1 or n_patches == 0:
        return vectors
    before, patches, after = split_patches(vectors, offset, n_patches)
    k = max(1, n_patches // factor)
    pooled = cluster_means(patches, ward_clusters(patches, k))
    return np.concatenate([before, pooled, after]).astype(vectors.dtype, copy=False)


def rowcol_pool(vectors: np.ndarray, offset: int, n_patches: int, grid_h: int, grid_w: int) -> np.ndarray:
    """One vector per patch row and per patch column (re-normalised means), plus the non-patch
    vectors: ``grid_h + grid_w`` patch vectors instead of ``grid_h * grid_w``."""
    if n_patches == 0 or grid_h * grid_w != n_patches:
        raise ValueError(f"patches ({n_patches}) do not lie on the {grid_h}x{grid_w} grid")
    before, patches, after = split_patches(vectors, offset, n_patches)
    grid = patches.astype(np.float32).reshape(grid_h, grid_w, -1)
    rows = normalise(grid.mean(axis=1))
    cols = normalise(grid.mean(axis=0))
    return np.concatenate([before, rows, cols, after]).astype(vectors.dtype, copy=False)
