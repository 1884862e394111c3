"""Token pooling of a page's multi-vector: hierarchical (Ward) and row/column means.

Only the image-patch vectors are pooled; the model's other vectors (prompt and special tokens)
are kept as they are, before and after the pooled ones, in their original order.

Hierarchical pooling: Ward linkage on the cosine distances between the L2-normalised patch
vectors (the condensed distance matrix, as linkage expects: passing the square matrix makes
scipy treat its rows as observations, an O(n^3) detour that also clusters something else), cut
into ``max(1, n // factor)`` clusters; each cluster's mean is re-normalised.

Each layout's pooling is an object (``POOLINGS[name](factor)``) that answers for the vectors it
keeps of a page: how many (``vectors_per_page``), of what dimension, in which Arrow shape and at
what Parquet cost. Multi-vector poolings (none, ``pool``, ``rowcol``) keep a list of vectors per
page; single-vector ones (``mean``, ``fde``) one vector per page, for documents and for queries.

>>> POOLINGS["pool"](3).vectors_per_page(1030, special=6)
347
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.layouts.encodings import PARQUET_PAGE_BYTES, Encoding
from operators.layouts.fde import FdeEncoder, FdeParams


def normalise(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1)


@functools.lru_cache(maxsize=16)
def _upper_triangle(n: int) -> np.ndarray:
    """Flat indices of an n x n matrix's upper triangle, row-major (pages of one budget share n;
    building them costs as much as the product itself)."""
    i, j = np.triu_indices(n, k=1)
    return i * n + j


def condensed_cosine_distances(vectors: np.ndarray) -> np.ndarray:
    """Condensed (upper-triangle, row-major) cosine distances of L2-normalised rows, as float64."""
    v = normalise(vectors.astype(np.float32))
    sim = v @ v.T
    d = 1.0 - sim.ravel().take(_upper_triangle(len(v)))  # in float32, as before: the same merges
    return np.maximum(d, 0.0, out=d).astype(np.float64)


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


# ---------------------------------------------------------------------------------------------
# Pooling objects: one class per way of keeping a page's multi-vector


class Pooling:
    """What a layout keeps of a page's multi-vector. Subclasses name themselves (``name``, as in
    ``Layout.pooling``) and say how many vectors a page keeps."""

    name: str | None
    kind = "mv"  # "mv" | "sv", as in ``Layout.kind``
    is_multi_vector = True

    def __init__(self, factor: int = 1):
        self.factor = factor

    def dim(self, model_dim: int, fde_dim: int | None = None, sv_dim: int | None = None) -> int:
        """Elements of each kept vector (``sv_dim``: the single-vector model's, where a run has one)."""
        return model_dim

    def vectors_per_page(self, full: float, special: float = 0.0, grid: tuple[float, float] | None = None) -> float:
        """Vectors a page keeps, from its full count (``special``: its non-patch vectors)."""
        raise NotImplementedError

    def arrow_type(self, codec: Encoding, dim: int) -> pa.DataType:
        """A page's value in the layout's column: a list of encoded vectors."""
        return pa.list_(codec.arrow_type(dim))

    def parquet_bytes(self, codec: Encoding, vectors: float, dim: int) -> float:
        return codec.parquet_bytes(vectors, dim)

    def scale_arrow_type(self) -> pa.DataType:
        """A page's value in the scale column of a scaled encoding (int8): a scale per vector."""
        return pa.list_(pa.float32())

    def vector_counts(self, column: pa.ChunkedArray | pa.Array, rows: int) -> np.ndarray:
        """Vectors of each row in the layout's column."""
        return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)

    def params(self, fde: FdeParams | None) -> dict:
        """Parameters recorded beside the layout's own (``Layout.params``)."""
        return {}

    def vectors(self, emb, raw: np.ndarray | None, codec: Encoding) -> np.ndarray:
        """One page's (n, D) float32 vectors before encoding. ``emb`` holds the archived
        (float16-rounded) vectors, ``raw`` the model's float32 output, when there is one."""
        raise NotImplementedError


class Unpooled(Pooling):
    """Every vector of the page."""

    name = None

    def vectors_per_page(self, full, special=0.0, grid=None):
        return full

    def vectors(self, emb, raw, codec):
        # only an encoding that keeps float32 (mv-fp32) keeps what the archive cannot
        return raw if raw is not None and codec.keeps_float32 else emb.vectors


class HierarchicalPooling(Pooling):
    """The patches pooled by ``factor`` (Ward clusters, ``hierarchical_pool``)."""

    name = "pool"

    def vectors_per_page(self, full, special=0.0, grid=None):
        patches = max(0.0, full - special)
        return special + max(1.0, math.floor(patches / self.factor))

    def vectors(self, emb, raw, codec):
        return hierarchical_pool(emb.vectors, emb.patch_offset, emb.n_patches, self.factor)


class RowColPooling(Pooling):
    """One vector per patch row and per patch column (``rowcol_pool``)."""

    name = "rowcol"

    def vectors_per_page(self, full, special=0.0, grid=None):
        patches = max(0.0, full - special)
        gh, gw = grid or (math.sqrt(patches), math.sqrt(patches))
        return special + gh + gw

    def vectors(self, emb, raw, codec):
        return rowcol_pool(emb.vectors, emb.patch_offset, emb.n_patches, emb.grid_h, emb.grid_w)


class SingleVector(Pooling):
    """One vector per page, for documents and for queries alike (scored by dot product)."""

    kind = "sv"
    is_multi_vector = False

    def vectors_per_page(self, full, special=0.0, grid=None):
        return 1.0

    def arrow_type(self, codec, dim):
        return codec.arrow_type(dim)

    def parquet_bytes(self, codec, vectors, dim):
        return codec.bytes_per_vector(dim) + PARQUET_PAGE_BYTES

    def scale_arrow_type(self):
        return pa.float32()

    def vector_counts(self, column, rows):
        return np.ones(rows, np.int64)

    def document_encoder(self, dim: int, fde: FdeParams) -> Callable[[object], np.ndarray]:
        """PageEmbedding -> the page's vector."""
        raise NotImplementedError

    def query_encoder(self, dim: int, fde: FdeParams) -> Callable[[np.ndarray], np.ndarray]:
        """A query's (n, D) vectors -> the query's vector."""
        raise NotImplementedError


class MeanVector(SingleVector):
    """The L2-normalised mean of the page's patch vectors."""

    name = "mean"

    def document_encoder(self, dim, fde):
        return lambda emb: normalise(emb.patch_vectors().astype(np.float32).mean(axis=0))

    def query_encoder(self, dim, fde):
        return lambda query: normalise(query.astype(np.float32).sum(axis=0))


class FdeVector(SingleVector):
    """MUVERA's fixed-dimensional encoding of the whole multi-vector (operators/layouts/fde.py)."""

    name = "fde"

    def dim(self, model_dim, fde_dim=None, sv_dim=None):
        return fde_dim

    def params(self, fde):
        if fde is None:
            return {}
        return dict(fde_reps=fde.reps, fde_bits=fde.bits, fde_proj_dim=fde.proj_dim, fde_seed=fde.seed, dim=fde.dim)

    def document_encoder(self, dim, fde):
        encoder = FdeEncoder(dim, fde)
        return lambda emb: encoder.encode_document(emb.vectors)

    def query_encoder(self, dim, fde):
        return FdeEncoder(dim, fde).encode_query


class VlmVector(SingleVector):
    """The single-vector model's own page vector (``sv:``; the ``sv_vlm`` column), as it is: an
    encoded copy of it (``sv-vlm-bf16``) is this pooling with an encoding."""

    name = "vlm"

    def dim(self, model_dim, fde_dim=None, sv_dim=None):
        # the single-vector model's dimension: given as sv_dim beside the multi-vector model's, or
        # as the only dimension by a caller that costs this layout alone (report, summaries)
        return sv_dim or model_dim

    def query_encoder(self, dim, fde):
        return lambda query: np.asarray(query, np.float32).reshape(-1)  # the model's query vector
    # (no document encoder: the page's vector is the sv_vlm column, LayoutEncoder reads it)


POOLINGS: dict[str | None, type[Pooling]] = {p.name: p for p in (Unpooled, HierarchicalPooling, RowColPooling,
                                                                 MeanVector, FdeVector, VlmVector)}
