"""Vector encodings: fp32, fp16, bf16, int8 (symmetric per-vector scale), binary (sign bits).

Each encoding is an object (``ENCODINGS["int8"]``) that answers every question about itself:
how an (n, D) float32 block is stored and decoded back, its Arrow type, its bytes per vector.
(Which vector type of a store holds it is the store's business: operators/stores/.) Scoring against encoded
documents decodes them (binary decodes to +-1), so one MaxSim serves every encoding;
``hamming_similarity`` is the pure bit form for binary queries.

>>> codec = ENCODINGS["int8"]
>>> codec.bytes_per_vector(128), codec.arrow_type(128)
(132.0, FixedSizeBinaryType(fixed_size_binary[128]))
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Parquet, as pagemill writes vector columns (plain, uncompressed; see parquet_sink): the vector
# bytes plus repetition/definition levels: ~6 bytes per fixed-size-list vector, ~0.1 per
# fixed-size-binary vector, ~5 bytes per page for the list itself. Measured on the dev corpus.
PARQUET_LEVEL_BYTES = {"list": 6.0, "binary": 0.1}
PARQUET_PAGE_BYTES = 5.0


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


class Encoding:
    """One way of storing vectors. Subclasses set the figures and implement ``encode``/``decode``;
    the Arrow form (a fixed-size list of floats, or fixed-size binary) comes from a mixin."""

    name: str
    bytes_per_dim: float  # in Parquet and in a store's vector of the same type
    scale_bytes: int = 0  # per vector, stored beside the codes (a column of its own)
    numpy_dtype: type  # of the stored values
    parquet_form: str  # "list" | "binary": how Parquet stores one vector (PARQUET_LEVEL_BYTES)
    keeps_float32 = False  # stores the model's float32 output as it is (the archive cannot)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(n, D) float -> (stored values, per-vector scales or None)."""
        raise NotImplementedError

    def decode(self, values: np.ndarray, dim: int, scale: np.ndarray | None = None) -> np.ndarray:
        """Stored values -> (n, D) float32, the vectors MaxSim scores."""
        raise NotImplementedError

    def width(self, dim: int) -> int:
        """Columns of the stored (n, width) numpy block."""
        return dim

    def arrow_type(self, dim: int) -> pa.DataType:
        raise NotImplementedError

    def _inner_array(self, flat: np.ndarray, dim: int, mask: pa.Array | None = None) -> pa.Array:
        """(n, width) stored values -> ``arrow_type(dim)`` per row (``mask``: True where null)."""
        raise NotImplementedError

    def _stored_values(self, values: pa.Array, dim: int) -> np.ndarray:
        raise NotImplementedError

    def ragged_array(self, blocks: list[np.ndarray], dim: int, null_mask: list[bool] | None = None) -> pa.Array:
        """Per-page encoded blocks as ``list<arrow_type>``, built without Python loops."""
        lengths = np.array([len(b) for b in blocks], dtype=np.int32)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        dtype = self.numpy_dtype
        flat = np.concatenate(blocks).astype(dtype, copy=False) if blocks else np.empty((0, self.width(dim)), dtype)
        inner = self._inner_array(np.ascontiguousarray(flat), dim)
        mask = pa.array(null_mask) if null_mask is not None else None
        return pa.ListArray.from_arrays(offsets, inner, mask=mask)

    def read_ragged(self, column: pa.ChunkedArray | pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``list<encoded vector>`` -> (offsets (n+1,), stored values (total, width))."""
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        offsets = arr.offsets.to_numpy()
        offsets = offsets - offsets[0]
        return offsets, self._stored_values(arr.flatten(), dim)  # flatten respects slicing, unlike .values

    def fixed_array(self, values: np.ndarray, dim: int, null_mask: list[bool] | None = None) -> pa.Array:
        """One encoded vector per row (a single-vector layout's column), ``arrow_type(dim)``."""
        flat = np.ascontiguousarray(values.astype(self.numpy_dtype, copy=False))
        mask = pa.array(null_mask, pa.bool_()) if null_mask is not None and any(null_mask) else None
        return self._inner_array(flat, dim, mask)

    def read_fixed(self, column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
        """``arrow_type(dim)`` per row -> stored values (rows, width)."""
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if pa.types.is_fixed_size_list(arr.type):  # null rows keep their slots (flatten drops them)
            values = arr.values.slice(arr.offset * dim, len(arr) * dim)
            return values.to_numpy(zero_copy_only=False).reshape(-1, dim)
        return self._stored_values(arr, dim)

    # Costs

    def bytes_per_vector(self, dim: int) -> float:
        """Raw stored bytes of one vector (int8 includes its float32 scale)."""
        return dim * self.bytes_per_dim + self.scale_bytes

    def parquet_bytes(self, vectors: float, dim: int) -> float:
        """Parquet bytes of a page's ``vectors`` vectors as a list column (and its scale column)."""
        levels = PARQUET_LEVEL_BYTES[self.parquet_form]
        scale_pages = PARQUET_PAGE_BYTES if self.scale_bytes else 0.0
        return vectors * (self.bytes_per_vector(dim) + levels) + PARQUET_PAGE_BYTES + scale_pages


class _FloatList(Encoding):
    """Stored as ``fixed_size_list<float, D>``."""

    parquet_form = "list"
    arrow_scalar: pa.DataType

    def arrow_type(self, dim: int) -> pa.DataType:
        return pa.list_(self.arrow_scalar, dim)

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, None]:
        return x.astype(self.numpy_dtype), None

    def decode(self, values: np.ndarray, dim: int, scale: np.ndarray | None = None) -> np.ndarray:
        return values.astype(np.float32)

    def _inner_array(self, flat: np.ndarray, dim: int, mask: pa.Array | None = None) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), self.arrow_scalar), dim, mask=mask)

    def _stored_values(self, values: pa.Array, dim: int) -> np.ndarray:
        return values.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


class _FixedBinary(Encoding):
    """Stored as ``fixed_size_binary``, so that Parquet stores exactly these bytes (Parquet has no
    8- or bf16-bit physical type: int8 values would take 4)."""

    parquet_form = "binary"

    def arrow_type(self, dim: int) -> pa.DataType:
        return pa.binary(int(dim * self.bytes_per_dim))

    def _inner_array(self, flat: np.ndarray, dim: int, mask: pa.Array | None = None) -> pa.Array:
        validity = pc.invert(mask).buffers()[1] if mask is not None else None
        return pa.FixedSizeBinaryArray.from_buffers(self.arrow_type(dim), flat.shape[0],
                                                    [validity, pa.py_buffer(flat.tobytes())])

    def _stored_values(self, values: pa.Array, dim: int) -> np.ndarray:
        width = int(dim * self.bytes_per_dim)
        raw = np.frombuffer(values.buffers()[1], np.uint8)[values.offset * width:(values.offset + len(values)) * width]
        return raw.view(self.numpy_dtype).reshape(len(values), -1)


class Fp32(_FloatList):
    name = "fp32"
    bytes_per_dim = 4.0
    numpy_dtype = np.float32
    arrow_scalar = pa.float32()
    keeps_float32 = True


class Fp16(_FloatList):
    name = "fp16"
    bytes_per_dim = 2.0
    numpy_dtype = np.float16
    arrow_scalar = pa.float16()


class Bf16(_FixedBinary):
    name = "bf16"
    bytes_per_dim = 2.0
    numpy_dtype = np.uint16

    def encode(self, x):
        return to_bf16_bits(x), None

    def decode(self, values, dim, scale=None):
        return from_bf16_bits(values)


class Int8(_FixedBinary):
    name = "int8"
    bytes_per_dim = 1.0
    scale_bytes = 4
    numpy_dtype = np.int8

    def encode(self, x):
        return int8_encode(x)

    def decode(self, values, dim, scale=None):
        return int8_decode(values, scale)


class Bin(_FixedBinary):
    name = "bin"
    bytes_per_dim = 1 / 8
    numpy_dtype = np.uint8

    def width(self, dim: int) -> int:
        return dim // 8

    def encode(self, x):
        return binary_encode(x), None

    def decode(self, values, dim, scale=None):
        return binary_decode(values, dim)


ENCODINGS: dict[str, Encoding] = {e.name: e for e in (Fp32(), Fp16(), Bf16(), Int8(), Bin())}


def encoding(name: str) -> Encoding:
    try:
        return ENCODINGS[name]
    except KeyError:
        raise ValueError(f"unknown encoding {name!r} (one of {', '.join(ENCODINGS)})") from None


# The figures by name, for callers that want a table.
BYTES_PER_DIM = {name: e.bytes_per_dim for name, e in ENCODINGS.items()}
SCALE_BYTES = {name: e.scale_bytes for name, e in ENCODINGS.items() if e.scale_bytes}  # per vector


def arrow_type(encoding_name: str, dim: int) -> pa.DataType:
    """The Arrow type of one encoded vector."""
    return encoding(encoding_name).arrow_type(dim)


def encode_block(x: np.ndarray, encoding_name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, D) float -> (stored values, per-vector scales or None)."""
    return encoding(encoding_name).encode(x)


def decode_block(values: np.ndarray, encoding_name: str, dim: int, scale: np.ndarray | None = None) -> np.ndarray:
    return encoding(encoding_name).decode(values, dim, scale)


def ragged_array(blocks: list[np.ndarray], encoding_name: str, dim: int, null_mask: list[bool] | None = None) -> pa.Array:
    """Per-page encoded blocks as ``list<arrow_type(encoding)>``, built without Python loops."""
    return encoding(encoding_name).ragged_array(blocks, dim, null_mask)


def read_ragged(column: pa.ChunkedArray | pa.Array, encoding_name: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``list<encoded vector>`` -> (offsets (n+1,), stored values (total, width))."""
    return encoding(encoding_name).read_ragged(column, dim)
