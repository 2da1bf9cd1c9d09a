"""Arrow columns as Python lists, numpy arrays or torch tensors (set_format / with_format)."""

import numpy as np
import pyarrow as pa
import torch

FORMAT_TYPES = (None, "python", "numpy", "np", "torch", "pt", "arrow")


def check_format_type(type):
    if type not in FORMAT_TYPES:
        raise ValueError(f"format type must be one of {FORMAT_TYPES}, got {type!r}")
    return {"python": None, "np": "numpy", "pt": "torch"}.get(type, type)


def _numeric(arrow_type) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)


def _to_tensor_type(array: np.ndarray, kind: str):
    """numpy -> torch with datasets' dtypes: integers as int64, floats as float32."""
    if kind == "numpy":
        return array
    if not array.flags.writeable and array.dtype not in (np.int32, np.int16, np.int8, np.uint8, np.float64):
        array = array.copy()  # arrow memory is read-only; torch wants writable tensors
    if array.dtype.kind in "iu":
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if array.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if array.dtype.kind == "b":
        return torch.from_numpy(np.ascontiguousarray(array))
    return array


def column_rows(column: pa.ChunkedArray | pa.Array, kind) -> list:
    """One formatted value per row of an Arrow column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if kind is None or kind == "arrow":
        return column.to_pylist()
    arrow_type = column.type
    if _numeric(arrow_type) and column.null_count == 0:
        return list(_to_tensor_type(column.to_numpy(zero_copy_only=False), kind))
    if (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)) and _numeric(arrow_type.value_type) \
            and column.null_count == 0 and column.flatten().null_count == 0:
        offsets = column.offsets.to_numpy()
        offsets = offsets - offsets[0]
        flat = _to_tensor_type(column.flatten().to_numpy(zero_copy_only=False), kind)
        return [flat[offsets[i]:offsets[i + 1]] for i in range(len(column))]
    rows = column.to_pylist()
    return [format_value(value, kind) for value in rows]


def format_value(value, kind):
    """A nested Python value as arrays/tensors where it is numeric and rectangular."""
    if value is None or isinstance(value, (str, bytes, dict)):
        if isinstance(value, dict):
            return {k: format_value(v, kind) for k, v in value.items()}
        return value
    if isinstance(value, (bool, int, float)):
        return _to_tensor_type(np.asarray(value), kind)
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return [format_value(v, kind) for v in value]
    if array.dtype.kind in "iufb":
        return _to_tensor_type(array, kind)
    return [format_value(v, kind) for v in value]


def stack(values: list, kind):
    """Rows of one column as a batch: stacked when every row has the same shape."""
    if kind is None or kind == "arrow" or not values:
        return values
    first = values[0]
    if isinstance(first, torch.Tensor) and all(isinstance(v, torch.Tensor) and v.shape == first.shape
                                               for v in values):
        return torch.stack(values)
    if isinstance(first, np.ndarray) and all(isinstance(v, np.ndarray) and v.shape == first.shape for v in values):
        return np.stack(values)
    return values


def column_batch(column, kind):
    if kind in (None, "arrow"):
        return column.to_pylist()
    arrow_type = column.type
    if _numeric(arrow_type) and column.null_count == 0:
        return _to_tensor_type(column.to_numpy(), kind)
    return stack(column_rows(column, kind), kind)
