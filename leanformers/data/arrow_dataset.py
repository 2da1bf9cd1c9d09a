"""Dataset: a table of rows over a pyarrow.Table.

A dataset loaded from files or produced by `map`/`filter` is memory-mapped from an Arrow
file in the cache, so it can be larger than RAM. Transforms return new datasets; each has a
fingerprint (input fingerprint + hashed arguments) that names its cache file, so the same
call in a new process reads the file instead of calling the function again.

select/shuffle/filter/sort/train_test_split copy no rows: the new dataset shares its parent's
table and carries an indices mapping, an int64 array of table row numbers (memory-mapped from an
Arrow file in the cache when it is large): row i of the dataset is row indices[i] of the table.
Reads take only the rows they need, batch by batch; flatten_indices() writes the rows out.
"""

import hashlib
import json
import math
import multiprocessing
import os
import pickle
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet
from tqdm.auto import tqdm

from ..files import leanformers_cache_dir, read_json, write_atomic
from .arrow_io import ArrowWriter, gather, read_arrow, table_from_columns, to_arrow_array
from .dataset_dict import DatasetDict
from .features import (ClassLabel, Features, Value, as_feature, cast_array, keep_features, recorded_features,
                       with_features)
from .fingerprint import combine, hash_value
from .formatting import check_format_type, column_batch, column_rows

# An indices mapping with at least this many rows is written to (and memory-mapped from) the cache.
INDICES_ON_DISK_ROWS = 100_000


def random_fingerprint() -> str:
    return uuid.uuid4().hex[:16]


def _fork_run(jobs):
    """Run each zero-argument callable in `jobs` in its own forked process; return their results.

    Forking (not spawning) lets the callables close over unpicklable state such as a tokenizer.
    """
    if len(jobs) == 1:
        return [jobs[0]()]
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as folder:
        def run(i, job):
            result = job()
            with open(os.path.join(folder, f"{i}.pkl"), "wb") as f:
                pickle.dump(result, f)

        processes = [context.Process(target=run, args=(i, job)) for i, job in enumerate(jobs)]
        for p in processes:
            p.start()
        for p in processes:
            p.join()
        failed = [i for i, p in enumerate(processes) if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"worker process(es) {failed} of {len(jobs)} failed; run with num_proc=None "
                               "to see the error")
        results = []
        for i in range(len(jobs)):
            with open(os.path.join(folder, f"{i}.pkl"), "rb") as f:
                results.append(pickle.load(f))
        return results


class Dataset:
    """Rows over a pyarrow.Table, with the datasets API."""

    def __init__(self, table: pa.Table, fingerprint: str | None = None, cache_dir=None, split=None,
                 format=None, indices: np.ndarray | None = None):
        self._data = table
        self._indices = indices  # int64 row numbers into `table`, or None: the rows are the table's
        self._fingerprint = fingerprint or random_fingerprint()
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.split = split
        self._format = dict(format) if format else {"type": None, "columns": None, "output_all_columns": False}

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, mapping: dict, features=None, split=None) -> "Dataset":
        table = table_from_columns(mapping)
        return cls(table, split=split)._maybe_cast(features)

    @classmethod
    def from_list(cls, rows: list, features=None, split=None) -> "Dataset":
        names = list(dict.fromkeys(key for row in rows for key in row))
        return cls.from_dict({name: [row.get(name) for row in rows] for name in names}, features, split)

    @classmethod
    def from_generator(cls, generator, features=None, gen_kwargs=None, cache_dir=None, keep_in_memory=False,
                       split=None) -> "Dataset":
        """Rows from a generator function, written in batches to a cache file keyed by its hash."""
        gen_kwargs = gen_kwargs or {}
        fingerprint = combine("generator", hash_value(generator, "generator"), hash_value(gen_kwargs, "gen_kwargs"))
        folder = None if keep_in_memory else Path(cache_dir or default_cache_root()) / "generator" / fingerprint
        path = folder / "data.arrow" if folder else None
        if path is not None and path.is_file():
            return cls(read_arrow(path), fingerprint, folder, split)._maybe_cast(features)
        writer = ArrowWriter(path)
        rows = []
        for row in generator(**gen_kwargs):
            rows.append(row)
            if len(rows) == 1000:
                writer.write_table(Dataset.from_list(rows)._data)
                rows = []
        if rows or writer.schema is None:
            writer.write_table(Dataset.from_list(rows)._data)
        return cls(writer.finish(), fingerprint, folder, split)._maybe_cast(features)

    def _maybe_cast(self, features):
        if features is None:
            return self
        return self.cast(features)

    def _new(self, table: pa.Table, fingerprint: str, keep_format=True, indices=None) -> "Dataset":
        fmt = dict(self._format) if keep_format else None
        if fmt and fmt["columns"] is not None:
            fmt["columns"] = [c for c in fmt["columns"] if c in table.column_names]
        # A column that keeps its name and type keeps its feature (a ClassLabel's names), as in datasets.
        table = keep_features(table, recorded_features(self._data.schema))
        return Dataset(table, fingerprint, self._cache_dir, self.split, fmt, indices)

    # -- the indices mapping ---------------------------------------------------------------------------
    def _with_indices(self, positions, fingerprint: str, keep_in_memory=False, path=None) -> "Dataset":
        """The rows at `positions` (of this dataset) as a dataset over the same table: no row is copied.

        The mapping is written to `path` (or, when large, to the cache) and memory-mapped from it.
        """
        rows = np.asarray(positions, dtype=np.int64)
        if self._indices is not None:
            rows = self._indices[rows]
        contiguous = len(rows) > 0 and bool(np.all(np.diff(rows) == 1))
        if path is None and not keep_in_memory and not contiguous and self._cache_dir is not None \
                and len(rows) >= INDICES_ON_DISK_ROWS:
            path = self._cache_dir / f"indices-{fingerprint}.arrow"
        if path is not None:
            writer = ArrowWriter(path)
            writer.write_table(pa.table({"indices": pa.array(rows, pa.int64())}))
            writer.finish()
            rows = read_indices(path)
        if contiguous:  # a run of rows is a slice of the table: no mapping needed
            return self._new(self._data.slice(int(rows[0]), len(rows)), fingerprint)
        return self._new(self._data, fingerprint, indices=rows)

    def _rows(self, start: int, length: int) -> pa.Table:
        """Rows start .. start+length of the dataset; only those rows are read."""
        if self._indices is None:
            return self._data.slice(start, length)
        return gather(self._data, self._indices[start:start + length])

    def _batches(self, batch_size: int = 10_000):
        for start in range(0, self.num_rows, batch_size):
            yield self._rows(start, batch_size)

    def _column(self, name: str):
        if self._indices is None:
            return self._data.column(name)
        return gather(self._data.select([name]), self._indices).column(0)

    def _table(self) -> pa.Table:
        """All rows as one table (in memory when there is a mapping: for outputs that are in memory anyway)."""
        return self._data if self._indices is None else gather(self._data, self._indices)

    def flatten_indices(self, keep_in_memory=False, cache_file_name=None, writer_batch_size=10_000,
                        new_fingerprint=None, **unused) -> "Dataset":
        """The rows written out to a new Arrow file in the cache (in memory without a cache), batch by batch."""
        fingerprint = new_fingerprint or combine(self._fingerprint, "flatten_indices")
        path = self._cache_path(fingerprint, keep_in_memory, cache_file_name)
        if path is not None and path.is_file():
            return self._new(read_arrow(path), fingerprint)
        writer = ArrowWriter(path)
        for table in self._batches(writer_batch_size):
            writer.write_table(table)
        return self._new(writer.finish(self._data.schema), fingerprint)

    # -- description -----------------------------------------------------------------------------------
    @property
    def data(self) -> pa.Table:
        return self._data

    @property
    def features(self) -> Features:
        return Features.from_arrow_schema(self._data.schema)

    @property
    def column_names(self) -> list[str]:
        return list(self._data.column_names)

    @property
    def num_rows(self) -> int:
        return self._data.num_rows if self._indices is None else len(self._indices)

    @property
    def num_columns(self) -> int:
        return self._data.num_columns

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.num_columns)

    @property
    def format(self) -> dict:
        return dict(self._format)

    @property
    def cache_files(self) -> list[dict]:
        return [{"filename": str(self._cache_dir)}] if self._cache_dir else []

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return f"Dataset({{\n    features: {self.column_names},\n    num_rows: {self.num_rows}\n}})"

    # -- formatting ------------------------------------------------------------------------------------
    def set_format(self, type=None, columns=None, output_all_columns=False):
        kind = check_format_type(type)
        if columns is not None:
            columns = [columns] if isinstance(columns, str) else list(columns)
            missing = [c for c in columns if c not in self.column_names]
            if missing:
                raise ValueError(f"columns {missing} not in the dataset; it has {self.column_names}")
        self._format = {"type": kind, "columns": columns, "output_all_columns": output_all_columns}

    def reset_format(self):
        self.set_format(None)

    def with_format(self, type=None, columns=None, output_all_columns=False) -> "Dataset":
        new = Dataset(self._data, self._fingerprint, self._cache_dir, self.split, indices=self._indices)
        new.set_format(type, columns, output_all_columns)
        return new

    def _columns_for_output(self):
        fmt = self._format
        if fmt["columns"] is None:
            return [(name, fmt["type"]) for name in self.column_names]
        chosen = set(fmt["columns"])
        return [(name, fmt["type"] if name in chosen else None) for name in self.column_names
                if name in chosen or fmt["output_all_columns"]]

    def _format_rows(self, table: pa.Table) -> list[dict]:
        columns = [(name, column_rows(table.column(name), kind)) for name, kind in self._columns_for_output()]
        return [{name: values[i] for name, values in columns} for i in range(table.num_rows)]

    def _format_batch(self, table: pa.Table) -> dict:
        return {name: column_batch(table.column(name), kind) for name, kind in self._columns_for_output()}

    # -- access ----------------------------------------------------------------------------------------
    def _check_index(self, i: int) -> int:
        n = self.num_rows
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for a dataset of {n} rows")
        return i % n

    def _positions(self, indices) -> np.ndarray:
        """Row positions checked against the length, negative ones counted from the end."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < -self.num_rows or indices.max() >= self.num_rows):
            bad = indices[(indices < -self.num_rows) | (indices >= self.num_rows)][0]
            raise IndexError(f"index {bad} is out of bounds for a dataset of {self.num_rows} rows")
        return np.where(indices < 0, indices + self.num_rows, indices)

    def _take(self, indices) -> pa.Table:
        positions = self._positions(indices)
        return gather(self._data, positions if self._indices is None else self._indices[positions])

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.column_names:
                raise KeyError(f"column {key!r} not in the dataset; it has {self.column_names}")
            kind = self._format["type"]
            if self._format["columns"] is not None and key not in self._format["columns"]:
                kind = None
            return column_batch(self._column(key), kind)
        if isinstance(key, (int, np.integer)):
            return self._format_rows(self._rows(self._check_index(int(key)), 1))[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.num_rows)
            table = self._rows(start, max(stop - start, 0)) if step == 1 else self._take(range(start, stop, step))
            return self._format_batch(table)
        if isinstance(key, (list, tuple, range, np.ndarray)) or hasattr(key, "tolist"):
            key = key.tolist() if hasattr(key, "tolist") else list(key)
            return self._format_batch(self._take(key))
        raise TypeError(f"dataset indices must be int, slice, list of ints or a column name, not {type(key).__name__}")

    def __getitems__(self, keys: list) -> list[dict]:
        """Rows for a list of indices at once (torch DataLoader uses this)."""
        return self._format_rows(self._take(list(keys)))

    def iter(self, batch_size: int, drop_last_batch: bool = False):
        for start in range(0, self.num_rows, batch_size):
            if drop_last_batch and start + batch_size > self.num_rows:
                return
            yield self._format_batch(self._rows(start, batch_size))

    def __iter__(self):
        for table in self._batches(1000):
            yield from self._format_rows(table)

    def to_list(self) -> list[dict]:
        return [row for table in self._batches() for row in table.to_pylist()]

    def to_dict(self) -> dict:
        return self._table().to_pydict()

    def to_pandas(self):
        return self._table().to_pandas()

    # -- map / filter ----------------------------------------------------------------------------------
    def _cache_path(self, fingerprint: str, keep_in_memory: bool, cache_file_name=None):
        if cache_file_name is not None:
            return Path(cache_file_name)
        if keep_in_memory or self._cache_dir is None:
            return None
        return self._cache_dir / f"cache-{fingerprint}.arrow"

    def map(self, function=None, with_indices=False, with_rank=False, input_columns=None, batched=False,
            batch_size=1000, drop_last_batch=False, remove_columns=None, keep_in_memory=False,
            load_from_cache_file=None, cache_file_name=None, writer_batch_size=1000, features=None,
            disable_nullable=False, fn_kwargs=None, num_proc=None, desc=None, new_fingerprint=None,
            **unused) -> "Dataset":
        """Apply `function` to every row (or batch of rows) and add/replace the columns it returns."""
        function = function if function is not None else (lambda x: x)
        input_columns = [input_columns] if isinstance(input_columns, str) else input_columns
        remove_columns = [remove_columns] if isinstance(remove_columns, str) else list(remove_columns or [])
        for name in remove_columns + list(input_columns or []):
            if name not in self.column_names:
                raise ValueError(f"column {name!r} not in the dataset; it has {self.column_names}")
        batch_size = self.num_rows if batch_size is None or batch_size <= 0 else batch_size
        fn_kwargs = dict(fn_kwargs or {})
        args = dict(with_indices=with_indices, with_rank=with_rank, input_columns=input_columns, batched=batched,
                    batch_size=batch_size if batched else None, drop_last_batch=drop_last_batch,
                    remove_columns=remove_columns, features=str(features), disable_nullable=disable_nullable)
        path = None
        if new_fingerprint is None:
            persistent = not keep_in_memory and (self._cache_dir is not None or cache_file_name is not None)
            if persistent:  # the key must be real: an unhashable function raises here, by name
                new_fingerprint = combine(self._fingerprint, "map", hash_value(function, "the map function"),
                                          hash_value(fn_kwargs, "fn_kwargs"), hash_value(args, "map arguments"))
            else:
                new_fingerprint = random_fingerprint()
        path = self._cache_path(new_fingerprint, keep_in_memory, cache_file_name)
        if path is not None and path.is_file() and load_from_cache_file is not False:
            return self._new(read_arrow(path), new_fingerprint)

        def process(start, stop, position, writer):
            bar = tqdm(total=stop - start, desc=desc or "Map", disable=None,
                       position=position, leave=position == 0)
            step = batch_size if batched else 1000
            for begin in range(start, stop, step):
                end = min(begin + step, stop)
                if batched and drop_last_batch and end - begin < batch_size:
                    break
                table = self._rows(begin, end - begin)
                out = self._apply(function, table, begin, batched, with_indices, with_rank, position,
                                  input_columns, remove_columns, fn_kwargs)
                writer.write_table(out)
                bar.update(end - begin)
            bar.close()

        table = self._run_sharded(process, path, num_proc)
        result = self._new(table, new_fingerprint)
        if features is not None:
            result = result.cast(features)
        return result

    def _apply(self, function, table, offset, batched, with_indices, with_rank, rank, input_columns,
               remove_columns, fn_kwargs) -> pa.Table:
        """Run the map function on one slice of rows; the output slice as a table."""
        batch = table.to_pydict()
        n = table.num_rows
        indices = list(range(offset, offset + n))
        if batched:
            inputs = [batch[c] for c in input_columns] if input_columns else [batch]
            extra = ([indices] if with_indices else []) + ([rank] if with_rank else [])
            out = function(*inputs, *extra, **fn_kwargs)
            out = {} if out is None else out
            if not isinstance(out, dict):
                raise TypeError(f"a batched map function must return a dict of lists (or None), got {type(out).__name__}")
            lengths = {k: len(v) for k, v in out.items()}
            out_rows = next(iter(lengths.values()), n)
            if len(set(lengths.values())) > 1:
                raise ValueError(f"the map function returned columns of different lengths: {lengths}")
        else:
            rows = [{k: batch[k][i] for k in batch} for i in range(n)]
            results = []
            for i, row in enumerate(rows):
                inputs = [row[c] for c in input_columns] if input_columns else [row]
                extra = ([indices[i]] if with_indices else []) + ([rank] if with_rank else [])
                result = function(*inputs, *extra, **fn_kwargs)
                if result is not None and not isinstance(result, dict):
                    raise TypeError(f"a map function must return a dict (or None), got {type(result).__name__}")
                results.append(result or {})
            names = list(dict.fromkeys(k for r in results for k in r))
            out = {name: [r.get(name) for r in results] for name in names}
            out_rows = n
        kept = [c for c in table.column_names if c not in remove_columns and c not in out]
        if kept and out_rows != n:
            raise ValueError(f"the map function returned {out_rows} rows for a batch of {n}; when it changes the "
                             f"number of rows, remove the input columns {kept} with remove_columns=")
        # a returned column replaces the input column in its place, as in datasets; new ones follow
        columns = {name: to_arrow_array(name, out[name]) if name in out else table.column(name)
                   for name in table.column_names if name not in remove_columns}
        for name, values in out.items():
            if name not in columns:
                columns[name] = to_arrow_array(name, values)
        if not columns:
            return pa.table({"__empty__": pa.nulls(out_rows)}).drop(["__empty__"]) if out_rows else pa.table({})
        return pa.table(columns)

    def _run_sharded(self, process, path, num_proc) -> pa.Table:
        """Call process(start, stop, position, writer) over num_proc contiguous shards; one table."""
        n = self.num_rows
        num_proc = max(1, min(num_proc or 1, n))
        if num_proc == 1:
            writer = ArrowWriter(path)
            try:
                process(0, n, 0, writer)
                return writer.finish(self._data.schema.empty_table().schema if n == 0 else None)
            except BaseException:
                writer.abort()
                raise
        bounds = [(i * n // num_proc, (i + 1) * n // num_proc) for i in range(num_proc)]
        shard_dir = Path(tempfile.mkdtemp(prefix="shards-", dir=path.parent if path else None))
        shard_paths = [shard_dir / f"shard-{i:05d}-of-{num_proc:05d}.arrow" for i in range(num_proc)]

        def job(i):
            def run():
                writer = ArrowWriter(shard_paths[i])
                process(*bounds[i], i, writer)
                writer.finish()
                return str(shard_paths[i])
            return run

        try:
            _fork_run([job(i) for i in range(num_proc)])
            writer = ArrowWriter(path)
            for shard in shard_paths:
                writer.write_table(read_arrow(shard))
            table = writer.finish()
            if path is None:  # in memory: copy out of the shard files before they are deleted
                table = pa.Table.from_batches([b for b in table.to_batches()], schema=table.schema)
                table = pa.concat_tables([table]).combine_chunks()
            return table
        finally:
            for shard in shard_paths:
                shard.unlink(missing_ok=True)
            shard_dir.rmdir()

    def filter(self, function=None, with_indices=False, input_columns=None, batched=False, batch_size=1000,
               keep_in_memory=False, load_from_cache_file=None, cache_file_name=None, fn_kwargs=None,
               num_proc=None, desc=None, new_fingerprint=None, **unused) -> "Dataset":
        """Keep the rows for which `function` returns True (a list of bools per batch when batched)."""
        input_columns = [input_columns] if isinstance(input_columns, str) else input_columns
        fn_kwargs = dict(fn_kwargs or {})
        batch_size = self.num_rows if batch_size is None or batch_size <= 0 else batch_size
        if new_fingerprint is None:
            persistent = not keep_in_memory and (self._cache_dir is not None or cache_file_name is not None)
            args = dict(with_indices=with_indices, input_columns=input_columns, batched=batched,
                        batch_size=batch_size if batched else None)
            new_fingerprint = combine(self._fingerprint, "filter", hash_value(function, "the filter function"),
                                      hash_value(fn_kwargs, "fn_kwargs"), hash_value(args, "filter arguments")) \
                if persistent else random_fingerprint()
        path = self._cache_path(new_fingerprint, keep_in_memory, cache_file_name)
        if path is not None and cache_file_name is None:
            path = path.with_name(f"indices-{new_fingerprint}.arrow")  # a filter writes the kept rows' numbers
        if path is not None and path.is_file() and load_from_cache_file is not False:  # numbers of table rows
            return self._new(self._data, new_fingerprint)._with_indices(read_indices(path), new_fingerprint,
                                                                   keep_in_memory=True)

        def keep_mask(start, stop, position):
            kept = []
            step = batch_size if batched else 1000
            bar = tqdm(total=stop - start, desc=desc or "Filter", disable=None, position=position,
                       leave=position == 0)
            for begin in range(start, stop, step):
                end = min(begin + step, stop)
                batch = self._rows(begin, end - begin).to_pydict()
                if batched:
                    inputs = [batch[c] for c in input_columns] if input_columns else [batch]
                    extra = [list(range(begin, end))] if with_indices else []
                    flags = list(function(*inputs, *extra, **fn_kwargs))
                    if len(flags) != end - begin:
                        raise ValueError(f"a batched filter function must return one bool per row: got {len(flags)} "
                                         f"for {end - begin} rows")
                else:
                    flags = []
                    for i in range(end - begin):
                        row = {k: batch[k][i] for k in batch}
                        inputs = [row[c] for c in input_columns] if input_columns else [row]
                        extra = [begin + i] if with_indices else []
                        flags.append(function(*inputs, *extra, **fn_kwargs))
                kept.append(np.flatnonzero(np.asarray(flags, dtype=bool)) + begin)
                bar.update(end - begin)
            bar.close()
            return np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)

        n = self.num_rows
        shards = max(1, min(num_proc or 1, n))
        bounds = [(i * n // shards, (i + 1) * n // shards, i) for i in range(shards)]
        parts = _fork_run([lambda b=b: keep_mask(*b) for b in bounds])
        indices = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return self._with_indices(indices, new_fingerprint, keep_in_memory, path)

    # -- row selection ---------------------------------------------------------------------------------
    def select(self, indices, keep_in_memory=False, new_fingerprint=None, **unused) -> "Dataset":
        positions = self._positions(indices.tolist() if hasattr(indices, "tolist") else list(indices))
        digest = hashlib.sha256(positions.tobytes()).hexdigest()  # fast for millions of indices
        fingerprint = new_fingerprint or combine(self._fingerprint, "select", digest)
        return self._with_indices(positions, fingerprint, keep_in_memory)

    def take(self, n: int) -> "Dataset":
        return self.select(range(min(n, self.num_rows)))

    def skip(self, n: int) -> "Dataset":
        return self.select(range(min(n, self.num_rows), self.num_rows))

    def shuffle(self, seed=None, generator=None, keep_in_memory=False, **unused) -> "Dataset":
        """Rows in a random order; the same seed gives the same order in every run."""
        if generator is None:
            generator = np.random.default_rng(seed)
        permutation = generator.permutation(self.num_rows)
        fingerprint = combine(self._fingerprint, "shuffle", seed) if seed is not None else random_fingerprint()
        return self._with_indices(permutation, fingerprint, keep_in_memory)

    def sort(self, column_names, reverse=False, null_placement="at_end", **unused) -> "Dataset":
        names = [column_names] if isinstance(column_names, str) else list(column_names)
        reverse = [reverse] * len(names) if isinstance(reverse, bool) else list(reverse)
        for name in names:
            if name not in self.column_names:
                raise ValueError(f"column {name!r} not in the dataset; it has {self.column_names}")
        keys = [(name, "descending" if r else "ascending") for name, r in zip(names, reverse)]
        options = pc.SortOptions(sort_keys=[(n, o, null_placement) for n, o in keys])
        keys = self._data.select(names) if self._indices is None else gather(self._data.select(names), self._indices)
        fingerprint = combine(self._fingerprint, "sort", names, reverse, null_placement)
        return self._with_indices(pc.sort_indices(keys, options=options).to_numpy(), fingerprint)

    def train_test_split(self, test_size=None, train_size=None, shuffle=True, seed=None, generator=None,
                         **unused):
        """DatasetDict with "train" and "test" splits; test gets ceil(test_size * n) rows."""
        n = self.num_rows
        if test_size is None and train_size is None:
            test_size = 0.25
        n_test = None if test_size is None else (math.ceil(test_size * n) if isinstance(test_size, float) else test_size)
        n_train = None if train_size is None else (math.floor(train_size * n) if isinstance(train_size, float)
                                                     else train_size)
        n_test = n - n_train if n_test is None else n_test
        n_train = n - n_test if n_train is None else n_train
        if n_test <= 0 or n_train <= 0 or n_train + n_test > n:
            raise ValueError(f"with {n} rows, test_size={test_size} and train_size={train_size} give {n_train} train "
                             f"and {n_test} test rows; each split needs at least one row")
        if shuffle:
            generator = generator if generator is not None else np.random.default_rng(seed)
            permutation = generator.permutation(n)
        else:
            permutation = np.arange(n)
        test_idx, train_idx = permutation[:n_test], permutation[n_test:n_test + n_train]
        if not shuffle:
            train_idx, test_idx = np.arange(n_train), np.arange(n_train, n_train + n_test)
        base = combine(self._fingerprint, "train_test_split", n_test, n_train, shuffle, seed)
        return DatasetDict({"train": self._with_indices(train_idx, combine(base, "train")),
                            "test": self._with_indices(test_idx, combine(base, "test"))})

    # -- columns ---------------------------------------------------------------------------------------
    def _check_columns(self, names):
        missing = [n for n in names if n not in self.column_names]
        if missing:
            raise ValueError(f"columns {missing} not in the dataset; it has {self.column_names}")

    def rename_column(self, original_column_name: str, new_column_name: str) -> "Dataset":
        return self.rename_columns({original_column_name: new_column_name})

    def rename_columns(self, column_mapping: dict) -> "Dataset":
        self._check_columns(list(column_mapping))
        names = [column_mapping.get(n, n) for n in self.column_names]
        if len(set(names)) != len(names):
            raise ValueError(f"renaming {column_mapping} would give duplicate column names {names}")
        features = Features({column_mapping.get(n, n): f for n, f in self.features.items()})
        table = with_features(self._data.rename_columns(names), features)
        new = self._new(table, combine(self._fingerprint, "rename", column_mapping), indices=self._indices)
        if new._format["columns"] is not None:
            new._format["columns"] = [column_mapping.get(c, c) for c in self._format["columns"]]
        return new

    def remove_columns(self, column_names) -> "Dataset":
        names = [column_names] if isinstance(column_names, str) else list(column_names)
        self._check_columns(names)
        return self._new(self._data.drop_columns(names), combine(self._fingerprint, "remove_columns", names),
                         indices=self._indices)

    def select_columns(self, column_names) -> "Dataset":
        names = [column_names] if isinstance(column_names, str) else list(column_names)
        self._check_columns(names)
        return self._new(self._data.select(names), combine(self._fingerprint, "select_columns", names),
                         indices=self._indices)

    def add_column(self, name: str, column, new_fingerprint=None, **unused) -> "Dataset":
        if name in self.column_names:
            raise ValueError(f"column {name!r} already exists; remove or rename it first")
        array = to_arrow_array(name, column.tolist() if hasattr(column, "tolist") else list(column))
        if len(array) != self.num_rows:
            raise ValueError(f"column {name!r} has {len(array)} values for {self.num_rows} rows")
        fingerprint = new_fingerprint or combine(self._fingerprint, "add_column", name, hash_value(array.to_pylist()))
        flat = self.flatten_indices() if self._indices is not None else self  # the new column lines up with rows
        return flat._new(flat._data.append_column(name, array), fingerprint)

    def cast_column(self, column: str, feature) -> "Dataset":
        """The column converted to `feature` (Value, ClassLabel, List, ...); the other columns untouched."""
        self._check_columns([column])
        return self.cast(Features({**self.features, column: as_feature(feature)}))

    def cast(self, features) -> "Dataset":
        """Every column converted to its feature in `features`, which names each column once."""
        features = Features({name: as_feature(f) for name, f in features.items()})
        if sorted(features) != sorted(self.column_names):
            raise ValueError(f"the columns in features ({list(features)}) must be the dataset's columns "
                             f"({self.column_names}); use cast_column to change one")
        table, current = self._data, self.features  # (features are derived from the schema on each read)
        for index, name in enumerate(table.column_names):
            if features[name] == current[name]:
                continue
            try:
                table = table.set_column(index, name, cast_array(table.column(name), features[name]))
            except (ValueError, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError) as err:
                raise ValueError(f"cannot cast column {name!r} from {current[name]} to {features[name]}: "
                                 f"{err}") from None
        table = with_features(table.select(list(features)), features)  # in the order of `features`, as datasets
        return self._new(table, combine(self._fingerprint, "cast", json.dumps(features.to_dict())),
                         indices=self._indices)

    def class_encode_column(self, column: str, include_nulls: bool = False) -> "Dataset":
        """A column of values replaced by ClassLabel ids, the names being its sorted distinct values as text."""
        self._check_columns([column])
        features = self.features
        if not isinstance(features[column], Value):
            raise ValueError(f"class_encode_column takes a Value column; {column!r} is {features[column]}")
        values = [v for v in self.unique(column) if include_nulls or v is not None]
        label = ClassLabel(names=sorted(str(v) for v in values))
        ids = pa.array([label.str2int(str(v)) for v in values], pa.int64())
        known = pa.array(values, self._data.column(column).type)
        encoded = pc.take(ids, pc.index_in(self._data.column(column), value_set=known))
        index = self.column_names.index(column)
        table = with_features(self._data.set_column(index, column, encoded), {**features, column: label})
        return self._new(table, combine(self._fingerprint, "class_encode_column", column, include_nulls),
                         indices=self._indices)

    def flatten(self, max_depth=16) -> "Dataset":
        table = self._data
        for _ in range(max_depth):
            if not any(pa.types.is_struct(f.type) for f in table.schema):
                break
            table = table.flatten()
        return self._new(table, combine(self._fingerprint, "flatten"), indices=self._indices)

    def unique(self, column: str) -> list:
        self._check_columns([column])
        if self._indices is not None and len(self._indices) == self._data.num_rows:  # a permutation: as datasets,
            return pc.unique(self._data.column(column)).to_pylist()  # the values in table order
        return pc.unique(self._column(column)).to_pylist()

    # -- writing ---------------------------------------------------------------------------------------
    def to_json(self, path_or_buf, lines=True, batch_size=10_000, **kwargs) -> int:
        """JSON Lines (one object per row; a JSON array with lines=False); returns bytes written."""
        with open(path_or_buf, "w", encoding="utf-8") as f:
            written = 0
            if not lines:
                written += f.write("[")
            for start in range(0, self.num_rows, batch_size):
                for i, row in enumerate(self._rows(start, batch_size).to_pylist()):
                    text = json.dumps(row, ensure_ascii=kwargs.get("force_ascii", False), default=str)
                    sep = "\n" if lines else ("," if start + i else "")
                    written += f.write(text + sep if lines else sep + text)
            if not lines:
                written += f.write("]")
        return written

    def to_csv(self, path_or_buf, batch_size=10_000, **kwargs) -> int:
        with pyarrow.csv.CSVWriter(str(path_or_buf), self._data.schema) as writer:
            for table in self._batches(batch_size):
                writer.write_table(table)
        return os.path.getsize(path_or_buf)

    def to_parquet(self, path_or_buf, batch_size=10_000, **kwargs) -> int:
        with pyarrow.parquet.ParquetWriter(str(path_or_buf), self._data.schema) as writer:
            for table in self._batches(batch_size):
                writer.write_table(table)
        return os.path.getsize(path_or_buf)

    def save_to_disk(self, dataset_path, **unused):
        """An Arrow file plus state.json, as datasets lays it out; written atomically file by file."""
        folder = Path(dataset_path)
        folder.mkdir(parents=True, exist_ok=True)
        writer = ArrowWriter(folder / "data-00000-of-00001.arrow")
        for table in self._batches(10_000):
            writer.write_table(table)
        writer.finish(self._data.schema)
        state = {"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": self._fingerprint,
                 "_format_columns": self._format["columns"], "_format_kwargs": {},
                 "_format_type": self._format["type"], "_output_all_columns": self._format["output_all_columns"],
                 "_split": self.split}
        write_atomic(folder / "state.json", json.dumps(state, indent=2).encode())
        info = {"citation": "", "description": "", "features": self.features.to_dict(), "homepage": "", "license": ""}
        write_atomic(folder / "dataset_info.json", json.dumps(info, indent=2).encode())


def read_indices(path) -> np.ndarray:
    """An indices mapping memory-mapped from the Arrow file `_with_indices` wrote."""
    column = read_arrow(path).column(0)
    return (column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()).to_numpy()


def default_cache_root() -> Path:
    return leanformers_cache_dir() / "datasets"


def concatenate_datasets(dsets: list, axis: int = 0, **unused) -> Dataset:
    """Rows of several datasets one after another (axis=0), or their columns side by side (axis=1)."""
    if not dsets:
        raise ValueError("concatenate_datasets needs at least one dataset")
    first = dsets[0]
    if axis == 0:
        names = first.column_names
        for d in dsets[1:]:
            if sorted(d.column_names) != sorted(names):
                raise ValueError(f"datasets to concatenate must have the same columns: {names} vs {d.column_names}")
        tables = [d._data.select(names) for d in dsets]
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(f"datasets to concatenate have different column types: {err}") from None
        indices = None
        if any(d._indices is not None for d in dsets):  # one mapping into the concatenated tables
            starts = np.cumsum([0] + [d._data.num_rows for d in dsets[:-1]])
            indices = np.concatenate([(np.arange(d._data.num_rows) if d._indices is None else d._indices) + start
                                      for d, start in zip(dsets, starts)])
    elif axis == 1:
        if len({d.num_rows for d in dsets}) != 1:
            raise ValueError(f"datasets concatenated on axis=1 need the same number of rows, got {[len(d) for d in dsets]}")
        dsets = [d.flatten_indices() if d._indices is not None else d for d in dsets]  # rows line up
        table = dsets[0]._data
        for d in dsets[1:]:
            for name in d.column_names:
                if name in table.column_names:
                    raise ValueError(f"column {name!r} is in more than one dataset")
                table = table.append_column(name, d._data.column(name))
    else:
        raise ValueError(f"axis must be 0 or 1, got {axis}")
    fingerprint = combine("concatenate", axis, *[d._fingerprint for d in dsets])
    return Dataset(table, fingerprint, first._cache_dir, first.split, first._format, indices if axis == 0 else None)


STOPPING_STRATEGIES = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")


def interleave_datasets(datasets: list, probabilities=None, seed=None, split=None,
                        stopping_strategy="first_exhausted", **unused) -> Dataset:
    """Rows taken from each dataset in turn (or from one drawn at random with `probabilities`).

    first_exhausted stops when a dataset runs out; all_exhausted when all have, restarting those that
    ran out; all_exhausted_without_replacement takes every row once. The order equals datasets' for
    the same seed: it draws sources in blocks of 1000 from numpy's default_rng(seed), as datasets does.
    """
    if not datasets:
        raise ValueError("interleave_datasets needs at least one dataset")
    if not all(isinstance(d, Dataset) for d in datasets):
        kinds = [type(d).__name__ for d in datasets]
        raise ValueError(f"interleave_datasets takes a list of Dataset objects, got {kinds}; pick a split of a "
                         "DatasetDict, for example dataset['train']")
    if stopping_strategy not in STOPPING_STRATEGIES:
        raise ValueError(f"stopping_strategy must be one of {list(STOPPING_STRATEGIES)}, got {stopping_strategy!r}")
    lengths = [len(d) for d in datasets]
    if probabilities is None:
        positions = _round_robin(lengths, stopping_strategy)
    else:
        if len(probabilities) != len(datasets):
            raise ValueError(f"{len(probabilities)} probabilities for {len(datasets)} datasets")
        empty = [i for i, (n, p) in enumerate(zip(lengths, probabilities, strict=True)) if n == 0 and p > 0]
        if empty:
            raise ValueError(f"datasets at positions {empty} are empty but may be drawn (probability > 0)")
        if stopping_strategy != "first_exhausted" and min(probabilities) <= 0:
            raise ValueError(f"stopping_strategy={stopping_strategy!r} needs every dataset drawn (probability > 0): "
                             "one with probability 0 is never exhausted")
        positions = _random_draws(lengths, probabilities, seed, stopping_strategy)
    offsets = np.cumsum([0] + lengths[:-1])
    rows = [offsets[source] + row for source, row in positions]
    result = concatenate_datasets(datasets).select(rows)
    result.split = split if split is not None else result.split
    return result


def _round_robin(lengths: list, strategy: str) -> list[tuple[int, int]]:
    """(source, row) one row from each source in turn, by full rounds."""
    if strategy == "first_exhausted":
        return [(s, k) for k in range(min(lengths)) for s in range(len(lengths))]
    if strategy == "all_exhausted":  # shorter sources start over
        return [(s, k % lengths[s]) for k in range(max(lengths)) for s in range(len(lengths))]
    return [(s, k) for k in range(max(lengths)) for s in range(len(lengths)) if k < lengths[s]]


def _random_draws(lengths: list, probabilities, seed, strategy: str) -> list[tuple[int, int]]:
    """(source, row) for sources drawn at random until the stopping strategy says stop."""
    rng = np.random.default_rng(seed)
    drawable = [s for s, p in enumerate(probabilities) if p > 0]  # a source never drawn never runs out
    taken = [0] * len(lengths)
    positions = []
    while True:
        for source in rng.choice(len(lengths), size=1000, p=probabilities).tolist():
            if strategy != "all_exhausted_without_replacement":
                positions.append((source, taken[source] % lengths[source]))
            elif taken[source] < lengths[source]:
                positions.append((source, taken[source]))
            taken[source] += 1
            finished = [taken[s] >= lengths[s] for s in drawable]
            if any(finished) if strategy == "first_exhausted" else all(finished):
                return positions


def load_from_disk(dataset_path, keep_in_memory=False, **unused):
    """A Dataset or DatasetDict written by save_to_disk, memory-mapped."""
    folder = Path(dataset_path)
    if (folder / "dataset_dict.json").is_file():
        splits = read_json(folder / "dataset_dict.json")["splits"]
        return DatasetDict({split: load_from_disk(folder / split, keep_in_memory) for split in splits})
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"{folder} is not a dataset folder written by save_to_disk (no state.json or "
                                "dataset_dict.json)")
    state = read_json(folder / "state.json")
    tables = [read_arrow(folder / entry["filename"]) for entry in state["_data_files"]]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if keep_in_memory:
        table = table.combine_chunks()
    if (folder / "dataset_info.json").is_file():  # datasets reads the features from there
        features = read_json(folder / "dataset_info.json").get("features")
        table = with_features(table, Features.from_dict(features)) if features else table
    fmt = {"type": state.get("_format_type"), "columns": state.get("_format_columns"),
           "output_all_columns": state.get("_output_all_columns", False)}
    return Dataset(table, state.get("_fingerprint"), None if keep_in_memory else folder, state.get("_split"), fmt)
