"""Vector encodings: fp32, fp16, bf16, int8 (symmetric per-vector scale), binary (sign bits).

Each encoding maps an (n, D) float32 block to its stored form and back, and names its Arrow
storage type. Scoring against encoded documents decodes them (binary decodes to +-1), so one
MaxSim serves every encoding; ``hamming_similarity`` is the pure bit form for binary queries.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ENCODINGS = ("fp32", "fp16", "bf16", "int8", "bin")
BYTES_PER_DIM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "bin": 1 / 8}
SCALE_BYTES = {"int8": 4}  # per vector, stored beside the codes


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((u >> 16) & 1) + 0x7FFF
    return ((u + rounding) >> 16).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def int8_encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes (n, D) int8 and scales (n,) float32 with x ~= codes * scale, |error| <= scale / 2."""
    x = x.astype(np.float32)
    scale = np.abs(x).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def int8_decode(codes: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return codes.astype(np.float32) * scale[:, None]


def binary_encode(x: np.ndarray) -> np.ndarray:
    """Sign bits (x > 0 -> 1), packed 8 per byte: (n, D/8) uint8."""
    if x.shape[1] % 8:
        raise ValueError(f"binary encoding needs a dimension divisible by 8, got {x.shape[1]}")
    return np.packbits(x > 0, axis=1)


def binary_decode(bits: np.ndarray, dim: int) -> np.ndarray:
    """Packed bits -> +-1 float32 (the asymmetric score: float query . sign(doc))."""
    return np.unpackbits(bits, axis=1, count=dim).astype(np.float32) * 2.0 - 1.0


def hamming_similarity(query_bits: np.ndarray, doc_bits: np.ndarray, dim: int) -> np.ndarray:
    """(q, d) similarities ``dim - 2 * hamming``: equal to the dot product of the +-1 vectors."""
    x = np.bitwise_xor(query_bits[:, None, :], doc_bits[None, :, :])
    ham = np.unpackbits(x, axis=2).sum(axis=2)
    return dim - 2.0 * ham


# Bytes of one stored vector; int8, bf16 and bin are fixed-size binary so that Parquet stores
# exactly these bytes (Parquet has no 8- or bf16-bit physical type: int8 values would take 4).
BINARY_WIDTH = {"bf16": lambda d: 2 * d, "int8": lambda d: d, "bin": lambda d: d // 8}
_NUMPY = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16, "int8": np.int8, "bin": np.uint8}


def arrow_type(encoding: str, dim: int) -> pa.DataType:
    """The Arrow type of one encoded vector."""
    if encoding in BINARY_WIDTH:
        return pa.binary(BINARY_WIDTH[encoding](dim))
    return {"fp32": pa.list_(pa.float32(), dim), "fp16": pa.list_(pa.float16(), dim)}[encoding]


def encode_block(x: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, D) float -> (stored values, per-vector scales or None)."""
    if encoding == "fp32":
        return x.astype(np.float32), None
    if encoding == "fp16":
        return x.astype(np.float16), None
    if encoding == "bf16":
        return to_bf16_bits(x), None
    if encoding == "int8":
        return int8_encode(x)
    if encoding == "bin":
        return binary_encode(x), None
    raise ValueError(f"unknown encoding {encoding!r} (one of {', '.join(ENCODINGS)})")


def decode_block(values: np.ndarray, encoding: str, dim: int, scale: np.ndarray | None = None) -> np.ndarray:
    if encoding in ("fp32", "fp16"):
        return values.astype(np.float32)
    if encoding == "bf16":
        return from_bf16_bits(values)
    if encoding == "int8":
        return int8_decode(values, scale)
    if encoding == "bin":
        return binary_decode(values, dim)
    raise ValueError(f"unknown encoding {encoding!r}")


def ragged_array(blocks: list[np.ndarray], encoding: str, dim: int, null_mask: list[bool] | None = None) -> pa.Array:
    """Per-page encoded blocks as ``list<arrow_type(encoding)>``, built without Python loops."""
    lengths = np.array([len(b) for b in blocks], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    dtype = _NUMPY[encoding]
    width = dim // 8 if encoding == "bin" else dim
    flat = np.concatenate(blocks).astype(dtype, copy=False) if blocks else np.empty((0, width), dtype)
    flat = np.ascontiguousarray(flat)
    n = flat.shape[0]
    if encoding in BINARY_WIDTH:
        inner = pa.FixedSizeBinaryArray.from_buffers(arrow_type(encoding, dim), n, [None, pa.py_buffer(flat.tobytes())])
    else:
        arrow_scalar = {"fp32": pa.float32(), "fp16": pa.float16()}[encoding]
        inner = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), arrow_scalar), dim)
    mask = pa.array(null_mask) if null_mask is not None else None
    return pa.ListArray.from_arrays(offsets, inner, mask=mask)


def read_ragged(column: pa.ChunkedArray | pa.Array, encoding: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``list<encoded vector>`` -> (offsets (n+1,), stored values (total, width))."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy()
    offsets = offsets - offsets[0]
    values = arr.flatten()  # respects slicing, unlike .values
    if encoding in BINARY_WIDTH:
        width = BINARY_WIDTH[encoding](dim)
        raw = np.frombuffer(values.buffers()[1], np.uint8)[values.offset * width:(values.offset + len(values)) * width]
        return offsets, raw.view(_NUMPY[encoding]).reshape(len(values), -1)
    flat = values.flatten().to_numpy(zero_copy_only=False)
    return offsets, flat.reshape(-1, dim)
