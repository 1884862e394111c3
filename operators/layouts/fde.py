"""MUVERA fixed-dimensional encodings: one vector whose inner product approximates MaxSim.

For each of ``reps`` repetitions, SimHash with ``bits`` random hyperplanes splits space into
2^bits buckets. A document contributes, per bucket, the mean of its vectors that fall there
(an empty bucket takes the document vector nearest to it in Hamming distance of the sketch); a
query contributes the sum of its vectors per bucket. Each bucket block is projected to
``proj_dim`` with a random +-1 matrix. The blocks are concatenated: ``reps * 2^bits * proj_dim``
dims. Then <fde_query(Q), fde_doc(D)> ~ sum over q in Q of <q, its nearest d in D> (Chamfer).

Seeded: the same seed gives the same hyperplanes and projections on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FdeParams:
    reps: int = 10
    bits: int = 4
    proj_dim: int = 16
    seed: int = 42

    @property
    def dim(self) -> int:
        return self.reps * (2**self.bits) * self.proj_dim


class FdeEncoder:
    def __init__(self, input_dim: int, params: FdeParams = FdeParams()):
        self.params = params
        self.input_dim = input_dim
        rng = np.random.default_rng(params.seed)
        self.planes = rng.standard_normal((params.reps, input_dim, params.bits)).astype(np.float32)
        signs = rng.integers(0, 2, (params.reps, input_dim, params.proj_dim)).astype(np.float32) * 2 - 1
        self.proj = signs / np.sqrt(params.proj_dim)
        self._powers = (1 << np.arange(params.bits)).astype(np.int64)

    @property
    def dim(self) -> int:
        return self.params.dim

    def _buckets(self, x: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
        bits = (x @ self.planes[r]) > 0  # (n, bits)
        return bits, bits.astype(np.int64) @ self._powers

    def _encode(self, x: np.ndarray, query: bool) -> np.ndarray:
        p = self.params
        nb = 2**p.bits
        x = x.astype(np.float32)
        out = np.zeros((p.reps, nb, p.proj_dim), np.float32)
        for r in range(p.reps):
            bits, bucket = self._buckets(x, r)
            sums = np.zeros((nb, x.shape[1]), np.float32)
            np.add.at(sums, bucket, x)
            counts = np.bincount(bucket, minlength=nb)
            if query:
                blocks = sums
            else:
                blocks = sums / np.maximum(counts, 1)[:, None]
                empty = np.flatnonzero(counts == 0)
                if len(empty) and len(x):
                    # Fill an empty bucket with the vector whose sketch is nearest to it.
                    bucket_bits = ((empty[:, None] >> np.arange(p.bits)) & 1).astype(bool)
                    ham = (bucket_bits[:, None, :] != bits[None, :, :]).sum(axis=2)
                    blocks[empty] = x[ham.argmin(axis=1)]
            out[r] = blocks @ self.proj[r]
        return out.reshape(-1)

    def encode_document(self, vectors: np.ndarray) -> np.ndarray:
        return self._encode(vectors, query=False)

    def encode_query(self, vectors: np.ndarray) -> np.ndarray:
        return self._encode(vectors, query=True)
