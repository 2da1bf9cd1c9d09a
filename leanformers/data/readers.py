"""Data files as a stream of pyarrow tables, one bounded chunk at a time.

One reader per builder: json (JSON Lines, a JSON array, or an object with field=), csv,
text (line / paragraph / document), parquet and arrow. Both load_dataset (which writes the
chunks to an Arrow cache file) and streaming (which turns them into rows) use them, so a
file is never read into memory whole unless its format requires it (a JSON document).
"""

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet

from .arrow_io import table_from_columns

CHUNK_BYTES = 8 << 20

EXTENSION_BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv",
                      ".txt": "text", ".text": "text", ".parquet": "parquet", ".arrow": "arrow"}


def _line_chunks(path: Path, chunk_bytes: int):
    """(first line number, bytes) pieces of a file, each ending at a line end."""
    line = 1
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            if not chunk:
                return
            if not chunk.endswith(b"\n"):
                chunk += f.readline()
            yield line, chunk
            line += chunk.count(b"\n")


def _python_type(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _explain_json_chunk(path: Path, first_line: int, chunk: bytes, arrow_error: Exception):
    """Find the line behind a pyarrow JSON error: not JSON, not an object, or a type conflict."""
    seen = {}
    for offset, raw in enumerate(chunk.split(b"\n")):
        lineno = first_line + offset
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}, line {lineno}: not valid JSON ({err}): {raw[:80]!r}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {lineno}: expected a JSON object per line, got {type(row).__name__}")
        for key, value in row.items():
            if value is None:
                continue
            kind = _python_type(value)
            if key in seen and seen[key][0] != kind:
                raise TypeError(f"{path}, line {lineno}: field {key!r} is {kind}, but {seen[key][0]} on line "
                                f"{seen[key][1]}; a column must hold one type")
            seen.setdefault(key, (kind, lineno))
    last_line = first_line + chunk.count(b"\n")
    raise ValueError(f"{path}, lines {first_line}-{last_line}: cannot read as JSON Lines: {arrow_error}")


def _json_document_table(path: Path, data, field) -> pa.Table:
    if field is not None:
        if not isinstance(data, dict):
            raise ValueError(f"{path}: field={field!r} needs a JSON object at the top level, got {type(data).__name__}")
        if field not in data:
            raise KeyError(f"{path} has no field {field!r}; its top-level fields are {sorted(data)}")
        data = data[field]
    if isinstance(data, list):
        if data and not all(isinstance(row, dict) for row in data):
            raise ValueError(f"{path}: expected a list of JSON objects" + (f" under {field!r}" if field else ""))
        names = list(dict.fromkeys(key for row in data for key in row))
        columns = {name: [row.get(name) for row in data] for name in names}
    elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        columns = data
    else:
        raise ValueError(f"{path}: a JSON document must hold a list of rows or a dict of columns; "
                         "for an object with the rows under one key, pass field=")
    try:
        return table_from_columns(columns)
    except TypeError as err:
        raise TypeError(f"{path}: {err}") from None


def read_json(path: Path, field=None, chunk_bytes=CHUNK_BYTES, **unused):
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4096).lstrip()
    if not head:
        raise ValueError(f"{path} is empty: no rows to read")
    if field is not None or head.startswith(b"["):
        try:
            data = json.loads(path.read_bytes())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
        yield _json_document_table(path, data, field)
        return
    for first_line, chunk in _line_chunks(path, chunk_bytes):
        if not chunk.strip():
            continue
        try:
            table = pyarrow.json.read_json(io.BytesIO(chunk),
                                           read_options=pyarrow.json.ReadOptions(block_size=len(chunk) + 1))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            if first_line == 1 and head.startswith(b"{") and _is_single_document(path):
                raise ValueError(f"{path} holds one JSON object, not JSON Lines; pass field= to name the key "
                                 "that holds the rows") from None
            _explain_json_chunk(path, first_line, chunk, err)
        yield table


def _is_single_document(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_bytes()), dict)
    except (json.JSONDecodeError, UnicodeDecodeError, MemoryError):
        return False


# datasets reads CSV through pandas: these cells are missing values (pandas' default na_values), and
# only these words are booleans.
CSV_NULLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
             "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
CSV_CONVERT = dict(null_values=CSV_NULLS, strings_can_be_null=True, true_values=["True", "TRUE", "true"],
                   false_values=["False", "FALSE", "false"])


def _as_pandas_reads(table: pa.Table) -> pa.Table:
    """The column types pandas gives: an integer column with a missing cell (or an empty one) is float64,
    and text is large_string (pandas 3 hands datasets its strings so)."""
    columns = []
    for column in table.columns:
        kind = column.type
        if (pa.types.is_integer(kind) and column.null_count) or pa.types.is_null(kind):
            column = column.cast(pa.float64())
        elif pa.types.is_string(kind):
            column = column.cast(pa.large_string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def read_csv(path: Path, sep=",", delimiter=None, column_names=None, chunk_bytes=CHUNK_BYTES, **unused):
    path = Path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty: no header and no rows")
    delimiter = delimiter or ("\t" if path.suffix == ".tsv" and sep == "," else sep)
    read_options = pyarrow.csv.ReadOptions(block_size=chunk_bytes, column_names=column_names)
    parse_options = pyarrow.csv.ParseOptions(delimiter=delimiter)
    try:
        reader = pyarrow.csv.open_csv(str(path), read_options=read_options, parse_options=parse_options,
                                      convert_options=pyarrow.csv.ConvertOptions(**CSV_CONVERT))
        # pandas leaves dates and times as text: read those columns again as strings
        temporal = {f.name: pa.string() for f in reader.schema if pa.types.is_temporal(f.type)}
        if temporal:
            reader = pyarrow.csv.open_csv(str(path), read_options=read_options, parse_options=parse_options,
                                          convert_options=pyarrow.csv.ConvertOptions(column_types=temporal,
                                                                                     **CSV_CONVERT))
        for batch in reader:
            yield _as_pandas_reads(pa.Table.from_batches([batch]))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ValueError(f"{path}: cannot read as CSV: {err}") from None


def read_text(path: Path, sample_by="line", keep_linebreaks=False, encoding="utf-8", chunk_bytes=CHUNK_BYTES,
              **unused):
    path = Path(path)
    if sample_by not in ("line", "paragraph", "document"):
        raise ValueError(f"sample_by must be 'line', 'paragraph' or 'document', got {sample_by!r}")
    with open(path, encoding=encoding, newline=None) as f:
        if sample_by == "document":
            yield pa.table({"text": [f.read()]})
            return
        pending = ""
        while True:
            chunk = f.read(chunk_bytes)
            if not chunk:
                break
            if sample_by == "line":
                chunk += f.readline()
                yield pa.table({"text": pa.array(chunk.splitlines(keepends=keep_linebreaks), pa.string())})
            else:
                pending += chunk
                pieces = pending.split("\n\n")
                pending = pieces.pop()
                if pieces:
                    yield pa.table({"text": pa.array(pieces, pa.string())})
        if sample_by == "paragraph" and pending:
            yield pa.table({"text": pa.array([pending], pa.string())})


def read_parquet(path: Path, columns=None, batch_size=10_000, **unused):
    try:
        parquet_file = pyarrow.parquet.ParquetFile(str(path))
    except pa.ArrowInvalid as err:
        raise ValueError(f"{path}: not a Parquet file: {err}") from None
    for batch in parquet_file.iter_batches(batch_size=batch_size, columns=columns):
        # the file's schema carries the features datasets recorded in it (a ClassLabel's names)
        yield pa.Table.from_batches([batch]).replace_schema_metadata(parquet_file.schema_arrow.metadata)


def read_arrow_file(path: Path, **unused):
    source = pa.memory_map(str(path))
    try:
        reader = pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        for i in range(reader.num_record_batches):
            yield pa.Table.from_batches([reader.get_batch(i)])
        return
    for batch in reader:
        yield pa.Table.from_batches([batch])


READERS = {"json": read_json, "csv": read_csv, "text": read_text, "parquet": read_parquet, "arrow": read_arrow_file}


def read_tables(builder: str, paths: list, **config):
    """Tables from every file in `paths` in order (config: field, sample_by, sep, ...)."""
    reader = READERS[builder]
    for path in paths:
        yield from reader(Path(path), **config)
