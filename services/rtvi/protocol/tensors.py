"""Tensor encoding of the v2 protocol, shared by the server and the client.

Raw contents are little-endian row-major; BYTES elements are each prefixed by a
4-byte little-endian length (the protocol's and Triton's wire format).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

import numpy as np

NUMERIC_DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_LENGTH = struct.Struct("<I")
# Far beyond any real request (a gRPC message is at most 2 GiB), far below numpy's limit.
_MAX_ELEMENTS = 2**40


class TensorError(ValueError):
    """A tensor's datatype, shape or contents do not agree."""


def encode_bytes(items: Iterable[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(item)) + item for item in items)


def decode_bytes(raw: bytes) -> list[bytes]:
    items: list[bytes] = []
    view = memoryview(raw)
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise TensorError("BYTES contents end inside a length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise TensorError("BYTES element runs past the end of the contents")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def element_count(shape: Sequence[int]) -> int:
    if any(dim < 0 for dim in shape):
        raise TensorError(f"shape {list(shape)} has a negative dimension")
    # numpy refuses such a shape even when another dimension is 0 (no data at all).
    if math.prod(dim for dim in shape if dim) > _MAX_ELEMENTS:
        raise TensorError(f"shape {list(shape)} is too large")
    return math.prod(shape)


def input_values(tensor, raw: bytes | None) -> np.ndarray | list[bytes]:
    """Decode one request input from its raw contents or its typed ``contents``.

    Returns a numpy array shaped like the tensor, or for BYTES a flat list of items.
    """
    shape = list(tensor.shape)
    count = element_count(shape)
    datatype = tensor.datatype
    if datatype == "BYTES":
        items = decode_bytes(raw) if raw is not None else list(tensor.contents.bytes_contents)
        if len(items) != count:
            raise TensorError(f"input {tensor.name!r}: shape {shape} needs {count} BYTES elements, got {len(items)}")
        return items
    dtype = NUMERIC_DATATYPES.get(datatype)
    if dtype is None:
        raise TensorError(f"input {tensor.name!r}: unsupported datatype {datatype!r}")
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise TensorError(
                f"input {tensor.name!r}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, got {len(raw)}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    field = _CONTENTS_FIELD.get(datatype)
    values = getattr(tensor.contents, field) if field else ()
    if len(values) != count:
        raise TensorError(f"input {tensor.name!r}: shape {shape} needs {count} values, got {len(values)}")
    try:
        return np.asarray(values, dtype=dtype).reshape(shape)
    except OverflowError:  # e.g. 300 in int_contents of an INT8 tensor
        raise TensorError(f"input {tensor.name!r}: a value in its contents is out of range for {datatype}") from None


def raw_contents(array: np.ndarray, datatype: str) -> bytes:
    return np.ascontiguousarray(array, dtype=NUMERIC_DATATYPES[datatype]).tobytes()
