"""IterableDataset: rows read lazily from data files (load_dataset(..., streaming=True)).

The files are read chunk by chunk (a few MB at a time), so memory stays bounded whatever
the file size. Transforms (map, filter, take, skip, shuffle, batch, column edits) are
recorded as steps and applied while iterating. `state_dict()` records the epoch and how
many examples were handed out; `load_state_dict()` makes the next iteration continue right
after them (the pipeline is deterministic for a given seed and epoch, so replaying it and
dropping the consumed examples gives exactly the rows an uninterrupted run would have).
"""

import itertools
import textwrap

import numpy as np

from .formatting import check_format_type, format_value
from .readers import read_tables


def _row_slices(tables, rows_per_slice=1000):
    for table in tables:
        for start in range(0, table.num_rows, rows_per_slice):
            yield from table.slice(start, rows_per_slice).to_pylist()


class FileSource:
    """Rows of data files in order, the file order shuffled per epoch when a seed is set."""

    def __init__(self, builder, paths, config):
        self.builder, self.paths, self.config = builder, list(paths), dict(config)

    @property
    def num_shards(self) -> int:
        return len(self.paths)

    def rows(self, shuffle_seed, epoch):
        paths = list(self.paths)
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed + epoch).permutation(len(paths))
            paths = [paths[i] for i in order]
        return _row_slices(read_tables(self.builder, paths, **self.config))


class GeneratorSource:
    def __init__(self, generator, gen_kwargs):
        self.generator, self.gen_kwargs = generator, dict(gen_kwargs or {})

    num_shards = 1

    def rows(self, shuffle_seed, epoch):
        return iter(self.generator(**self.gen_kwargs))


def _batches(rows, size, drop_last=False):
    while True:
        chunk = list(itertools.islice(rows, size))
        if not chunk or (drop_last and len(chunk) < size):
            return
        yield chunk


def _columns(chunk: list[dict]) -> dict:
    names = list(dict.fromkeys(k for row in chunk for k in row))
    return {name: [row.get(name) for row in chunk] for name in names}


def _map_rows(rows, step):
    fn, batched, batch_size = step["function"], step["batched"], step["batch_size"]
    kwargs, input_columns, remove = step["fn_kwargs"], step["input_columns"], step["remove_columns"]
    index = 0
    if not batched:
        for row in rows:
            inputs = [row[c] for c in input_columns] if input_columns else [row]
            extra = [index] if step["with_indices"] else []
            out = fn(*inputs, *extra, **kwargs) or {}
            index += 1
            yield {**{k: v for k, v in row.items() if k not in remove}, **out}
        return
    for chunk in _batches(rows, batch_size, step["drop_last_batch"]):
        batch = _columns(chunk)
        inputs = [batch[c] for c in input_columns] if input_columns else [batch]
        extra = [list(range(index, index + len(chunk)))] if step["with_indices"] else []
        out = dict(fn(*inputs, *extra, **kwargs) or {})
        index += len(chunk)
        n_out = len(next(iter(out.values()))) if out else len(chunk)
        kept = {k: v for k, v in batch.items() if k not in remove and k not in out}
        if kept and n_out != len(chunk):
            raise ValueError(f"the map function returned {n_out} rows for a batch of {len(chunk)}; remove the input "
                             f"columns {list(kept)} with remove_columns=")
        merged = {**kept, **out}
        for i in range(n_out):
            yield {k: v[i] for k, v in merged.items()}


def _filter_rows(rows, step):
    fn, kwargs, input_columns = step["function"], step["fn_kwargs"], step["input_columns"]
    index = 0
    if not step["batched"]:
        for row in rows:
            inputs = [row[c] for c in input_columns] if input_columns else [row]
            extra = [index] if step["with_indices"] else []
            index += 1
            if fn(*inputs, *extra, **kwargs):
                yield row
        return
    for chunk in _batches(rows, step["batch_size"]):
        batch = _columns(chunk)
        inputs = [batch[c] for c in input_columns] if input_columns else [batch]
        extra = [list(range(index, index + len(chunk)))] if step["with_indices"] else []
        index += len(chunk)
        for row, keep in zip(chunk, fn(*inputs, *extra, **kwargs)):
            if keep:
                yield row


def _shuffle_rows(rows, buffer_size, rng):
    """Reservoir-style buffer shuffle: each output is a random pick from the next buffer_size rows."""
    buffer = []
    for row in rows:
        if len(buffer) < buffer_size:
            buffer.append(row)
            continue
        i = int(rng.integers(buffer_size))
        yield buffer[i]
        buffer[i] = row
    order = rng.permutation(len(buffer))
    for i in order:
        yield buffer[i]


class IterableDataset:
    """A lazily read dataset: iterate it, or chain map/filter/take/skip/shuffle/batch."""

    def __init__(self, source, steps=(), split=None, format_type=None, shuffle_seed=None, epoch=0):
        self._source = source
        self._steps = list(steps)
        self.split = split
        self._format_type = format_type
        self._shuffle_seed = shuffle_seed
        self._epoch = epoch
        self._resume_from = 0
        self._num_yielded = 0

    @classmethod
    def from_files(cls, builder, paths, split=None, **config):
        return cls(FileSource(builder, paths, config), split=split)

    @classmethod
    def from_generator(cls, generator, gen_kwargs=None, split=None, **unused):
        return cls(GeneratorSource(generator, gen_kwargs), split=split)

    def _with(self, step=None, **changes) -> "IterableDataset":
        state = dict(source=self._source, steps=self._steps + ([step] if step else []), split=self.split,
                     format_type=self._format_type, shuffle_seed=self._shuffle_seed, epoch=self._epoch)
        state.update(changes)
        return IterableDataset(**state)

    # -- description -----------------------------------------------------------------------------------
    @property
    def num_shards(self) -> int:
        return self._source.num_shards

    @property
    def column_names(self) -> list[str] | None:
        """Column names from the first row (reads one chunk); None for an empty dataset."""
        first = next(iter(self._with()), None)
        return list(first) if isinstance(first, dict) else None

    @property
    def features(self) -> dict | None:
        first = next(iter(self._with(format_type=None)), None)
        return None if first is None else {k: type(v).__name__ for k, v in first.items()}

    def __repr__(self) -> str:
        return f"IterableDataset({{\n    features: {self.column_names},\n    num_shards: {self.num_shards}\n}})"

    # -- iteration -------------------------------------------------------------------------------------
    def _rows(self):
        rows = self._source.rows(self._shuffle_seed, self._epoch)
        for step in self._steps:
            kind = step["kind"]
            if kind == "map":
                rows = _map_rows(rows, step)
            elif kind == "filter":
                rows = _filter_rows(rows, step)
            elif kind == "take":
                rows = itertools.islice(rows, step["n"])
            elif kind == "skip":
                rows = itertools.islice(rows, step["n"], None)
            elif kind == "shuffle":
                rng = np.random.default_rng(None if step["seed"] is None else step["seed"] + self._epoch)
                rows = _shuffle_rows(rows, step["buffer_size"], rng)
            elif kind == "batch":
                rows = (_columns(chunk) for chunk in _batches(rows, step["batch_size"], step["drop_last_batch"]))
            elif kind == "columns":
                rows = map(step["edit"], rows)
        return rows

    def __iter__(self):
        rows = self._rows()
        skip, self._resume_from = self._resume_from, 0
        if skip:
            rows = itertools.islice(rows, skip, None)
        self._num_yielded = skip
        for row in rows:
            self._num_yielded += 1
            yield format_value(row, self._format_type) if self._format_type else row

    def iter(self, batch_size: int, drop_last_batch: bool = False):
        for chunk in _batches(iter(self), batch_size, drop_last_batch):
            yield _columns(chunk)

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "num_examples_yielded": self._num_yielded}

    def load_state_dict(self, state: dict):
        self._epoch = state["epoch"]
        self._resume_from = state["num_examples_yielded"]

    def set_epoch(self, epoch: int):
        self._epoch = epoch

    # -- transforms ------------------------------------------------------------------------------------
    def map(self, function=None, with_indices=False, input_columns=None, batched=False, batch_size=1000,
            drop_last_batch=False, remove_columns=None, fn_kwargs=None, **unused) -> "IterableDataset":
        input_columns = [input_columns] if isinstance(input_columns, str) else input_columns
        remove = [remove_columns] if isinstance(remove_columns, str) else list(remove_columns or [])
        return self._with(dict(kind="map", function=function or (lambda x: x), with_indices=with_indices,
                               input_columns=input_columns, batched=batched, batch_size=batch_size or 1000,
                               drop_last_batch=drop_last_batch, remove_columns=remove, fn_kwargs=fn_kwargs or {}))

    def filter(self, function=None, with_indices=False, input_columns=None, batched=False, batch_size=1000,
               fn_kwargs=None, **unused) -> "IterableDataset":
        input_columns = [input_columns] if isinstance(input_columns, str) else input_columns
        return self._with(dict(kind="filter", function=function, with_indices=with_indices,
                               input_columns=input_columns, batched=batched, batch_size=batch_size or 1000,
                               fn_kwargs=fn_kwargs or {}))

    def take(self, n: int) -> "IterableDataset":
        return self._with(dict(kind="take", n=n))

    def skip(self, n: int) -> "IterableDataset":
        return self._with(dict(kind="skip", n=n))

    def shuffle(self, seed=None, buffer_size=1000, generator=None) -> "IterableDataset":
        """Shuffle the file order and, through a buffer of buffer_size rows, the rows."""
        if seed is None and generator is not None:
            seed = int(generator.integers(2**31))
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31))
        return self._with(dict(kind="shuffle", buffer_size=buffer_size, seed=seed), shuffle_seed=seed)

    def batch(self, batch_size: int, drop_last_batch: bool = False) -> "IterableDataset":
        return self._with(dict(kind="batch", batch_size=batch_size, drop_last_batch=drop_last_batch))

    def rename_column(self, original_column_name, new_column_name) -> "IterableDataset":
        return self.rename_columns({original_column_name: new_column_name})

    def rename_columns(self, column_mapping: dict) -> "IterableDataset":
        return self._with(dict(kind="columns", edit=lambda row: {column_mapping.get(k, k): v for k, v in row.items()}))

    def remove_columns(self, column_names) -> "IterableDataset":
        names = {column_names} if isinstance(column_names, str) else set(column_names)
        return self._with(dict(kind="columns", edit=lambda row: {k: v for k, v in row.items() if k not in names}))

    def select_columns(self, column_names) -> "IterableDataset":
        names = [column_names] if isinstance(column_names, str) else list(column_names)
        return self._with(dict(kind="columns", edit=lambda row: {k: row[k] for k in names}))

    def with_format(self, type=None) -> "IterableDataset":
        return self._with(format_type=check_format_type(type))


class IterableDatasetDict(dict):
    """{split: IterableDataset} from load_dataset(..., streaming=True) without split=."""

    def __repr__(self) -> str:
        body = "\n".join(f"{split}: {dataset!r}" for split, dataset in self.items())
        return f"IterableDatasetDict({{\n{textwrap.indent(body, '    ')}\n}})"

    def _apply(self, method, *args, **kwargs):
        return IterableDatasetDict({s: getattr(d, method)(*args, **kwargs) for s, d in self.items()})

    def map(self, function=None, **kwargs):
        return self._apply("map", function, **kwargs)

    def filter(self, function=None, **kwargs):
        return self._apply("filter", function, **kwargs)

    def shuffle(self, seed=None, buffer_size=1000):
        return self._apply("shuffle", seed, buffer_size)

    def rename_column(self, original_column_name, new_column_name):
        return self._apply("rename_column", original_column_name, new_column_name)

    def remove_columns(self, column_names):
        return self._apply("remove_columns", column_names)

    def select_columns(self, column_names):
        return self._apply("select_columns", column_names)

    def with_format(self, type=None):
        return self._apply("with_format", type)
