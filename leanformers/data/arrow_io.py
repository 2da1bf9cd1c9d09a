"""Arrow files on disk: atomic writes of record batches, memory-mapped reads, and turning
Python columns into Arrow arrays with the compact integer types tokenizer outputs fit."""

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

# Tokenizer outputs stored with the smallest type that holds them, as datasets does.
COMPACT_TYPES = {"input_ids": pa.int32(), "attention_mask": pa.int8(), "token_type_ids": pa.int8(),
                 "special_tokens_mask": pa.int8()}


def read_arrow(path) -> pa.Table:
    """A table memory-mapped from an Arrow IPC file (stream or file format): no copy into RAM."""
    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source = pa.memory_map(str(path))
        return pa.ipc.open_file(source).read_all()


def to_arrow_array(name: str, values) -> pa.Array:
    """One column of Python values (or a tensor/ndarray) as an Arrow array."""
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.ndim > 1:
        values = list(values)
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise TypeError(f"column {name!r} holds values of mixed or unsupported types: {err}") from None
    compact = COMPACT_TYPES.get(name)
    if compact is not None and pa.types.is_list(array.type) and pa.types.is_integer(array.type.value_type):
        try:
            array = array.cast(pa.list_(compact))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # values too large for the compact type: keep int64
    return array


def table_from_columns(columns: dict) -> pa.Table:
    return pa.table({name: to_arrow_array(name, values) for name, values in columns.items()})


class ArrowWriter:
    """Write record batches to `path` through a temporary file renamed into place on close.

    The first batch fixes the schema; later batches are cast to it, or the error names the
    column whose type changed. With path=None the batches are kept in memory.
    """

    def __init__(self, path=None):
        self.path = Path(path) if path is not None else None
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}") if self.path else None
        self.schema = None
        self.writer = None
        self.batches = []
        self.num_rows = 0

    def write_table(self, table: pa.Table):
        if self.schema is None:
            self.schema = table.schema
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.writer = pa.ipc.new_stream(str(self.tmp), self.schema)
        elif table.schema != self.schema:
            table = self._conform(table)
        self.num_rows += table.num_rows
        if self.writer is not None:
            self.writer.write_table(table)
        else:
            self.batches.extend(table.to_batches())

    def _conform(self, table: pa.Table) -> pa.Table:
        if set(table.column_names) != set(self.schema.names):
            raise ValueError(f"rows have different columns: {self.schema.names} first, then {table.column_names}")
        columns = []
        for field in self.schema:
            column = table.column(field.name)
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise TypeError(f"column {field.name!r} changes type: {field.type} in earlier rows, "
                                    f"{column.type} in later ones") from None
            columns.append(column)
        return pa.Table.from_arrays(columns, schema=self.schema)

    def finish(self, empty_schema: pa.Schema | None = None) -> pa.Table:
        """Close and return the written table (memory-mapped when on disk)."""
        if self.schema is None:
            self.write_table((empty_schema or pa.schema([])).empty_table())
        if self.writer is None:
            return pa.Table.from_batches(self.batches, schema=self.schema)
        self.writer.close()
        os.replace(self.tmp, self.path)
        return read_arrow(self.path)

    def abort(self):
        if self.writer is not None:
            self.writer.close()
            self.tmp.unlink(missing_ok=True)


def gather(table: pa.Table, rows) -> pa.Table:
    """Rows `rows` (int64 positions) of `table`, reading only the record batches they fall in.

    Table.take would first concatenate every chunk of each column, copying a memory-mapped
    table into RAM; here each batch's rows are taken from that batch and put back in order.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0 or np.all(np.diff(rows) == 1):
        return table.slice(int(rows[0]) if len(rows) else 0, len(rows))
    batches = table.to_batches()
    if len(batches) == 1:
        return pa.Table.from_batches(batches).take(pa.array(rows))
    starts = np.cumsum([0] + [b.num_rows for b in batches[:-1]])
    batch_of = np.searchsorted(starts, rows, side="right") - 1
    order = np.argsort(batch_of, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(batch_of[order])) + 1)
    parts = [batches[batch_of[g[0]]].take(pa.array(rows[g] - starts[batch_of[g[0]]])) for g in groups]
    gathered = pa.Table.from_batches(parts, schema=table.schema).combine_chunks()
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return gathered.take(pa.array(back))
