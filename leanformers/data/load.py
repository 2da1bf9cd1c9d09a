"""load_dataset: local files, folders and hub dataset repos -> Dataset / DatasetDict / IterableDataset.

Non-streaming loads convert the data files of each split into one Arrow file in the cache
(<cache>/<builder>/<key>/<split>.arrow, keyed by the builder options and the files' paths,
sizes and modification times) and memory-map it, so later loads and `map` caches (written
beside it) skip the parsing. Streaming reads the files lazily, chunk by chunk.
"""

import glob
import os
import re
from pathlib import Path

from ..hub import cached_snapshot, download_snapshot, is_offline
from .arrow_dataset import Dataset, concatenate_datasets, default_cache_root
from .arrow_io import ArrowWriter, read_arrow
from .dataset_dict import DatasetDict
from .fingerprint import combine
from .iterable import IterableDataset
from .readers import EXTENSION_BUILDERS, READERS, read_tables

SPLIT_KEYWORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation"),
}
DATA_PATTERNS = ["*.jsonl", "*.json", "*.ndjson", "*.csv", "*.tsv", "*.txt", "*.parquet", "*.arrow"]


def _split_of(path: str, base: Path) -> str | None:
    """train/validation/test from a keyword in the file or folder names (delimited by - _ . / or space)."""
    relative = os.path.relpath(path, base).replace(os.sep, "/").lower()
    for split, words in SPLIT_KEYWORDS.items():
        if any(re.search(rf"(^|[-_. /]){word}([-_. /0-9]|$)", relative) for word in words):
            return split
    return None


def _expand(pattern, base: Path) -> list[str]:
    pattern = os.fspath(pattern)
    full = pattern if os.path.isabs(pattern) or pattern.startswith("~") else str(base / pattern)
    full = os.path.expanduser(full)
    if any(ch in pattern for ch in "*?["):
        found = sorted(p for p in glob.glob(full, recursive=True) if os.path.isfile(p))
        if not found:
            raise FileNotFoundError(f"no files match {pattern!r} in {base}")
        return found
    if not os.path.isfile(full):
        raise FileNotFoundError(f"data file {full} does not exist")
    return [full]


def resolve_data_files(data_files, base: Path) -> dict[str, list[str]]:
    """{split: [paths]} from a string, list, glob or dict of splits."""
    if isinstance(data_files, (str, os.PathLike)):
        data_files = [data_files]
    if isinstance(data_files, (list, tuple)):
        return {"train": [p for pattern in data_files for p in _expand(pattern, base)]}
    if isinstance(data_files, dict):
        resolved = {}
        for split, patterns in data_files.items():
            patterns = [patterns] if isinstance(patterns, (str, os.PathLike)) else patterns
            resolved[str(split)] = [p for pattern in patterns for p in _expand(pattern, base)]
        return resolved
    raise TypeError(f"data_files must be a path, a list of paths or a dict of splits, got {type(data_files).__name__}")


def files_in_folder(folder: Path) -> dict[str, list[str]]:
    """The data files of a folder, split by the train/validation/test keywords in their names."""
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSION_BUILDERS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                   and p.name.lower() not in ("dataset_infos.json", "dataset_info.json", "state.json",
                                              "dataset_dict.json"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no data files ({', '.join(sorted(EXTENSION_BUILDERS))})")
    splits = {}
    for path in files:
        splits.setdefault(_split_of(path, folder), []).append(path)
    if None in splits:
        if len(splits) > 1:
            # Files with no split keyword beside files with one: treat them as train, as datasets does.
            splits.setdefault("train", []).extend(splits.pop(None))
        else:
            splits = {"train": splits.pop(None)}
    order = ["train", "validation", "test"]
    return {split: splits[split] for split in order if split in splits}


# Keys of a `configs:` entry that choose files; the others are reader options (sep, field, ...).
CONFIG_FILE_KEYS = ("config_name", "data_files", "data_dir", "default", "features", "version")


def card_configs(folder: Path) -> dict[str, dict]:
    """The `configs:` of the YAML header of the folder's README.md (the dataset card), by config name."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    lines = readme.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "---" or "---" not in lines[1:]:
        return {}
    import yaml  # pyyaml comes with gguf and huggingface_hub; only a dataset card needs it

    header = yaml.safe_load("\n".join(lines[1:lines[1:].index("---") + 1])) or {}
    entries = header.get("configs") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "config_name" in e for e in entries):
        raise ValueError(f"{readme}: `configs:` must be a list of entries each with a config_name")
    return {entry["config_name"]: entry for entry in entries}


def _default_config(configs: dict, dataset: str) -> str:
    """The config load_dataset reads without a name: the only one, the one named "default" or marked default."""
    defaults = [name for name, entry in configs.items() if len(configs) == 1 or name == "default"
                or entry.get("default")]
    if len(defaults) > 1:
        raise ValueError(f"dataset {dataset!r} marks several configs as default: {defaults}")
    if not defaults:
        raise ValueError(f"Config name is missing. Please pick one among the available configs: {list(configs)}\n"
                         f"Example of usage:\n\t`load_dataset({dataset!r}, {next(iter(configs))!r})`")
    return defaults[0]


def _config_files(entry: dict, folder: Path) -> dict[str, list[str]]:
    """{split: [paths]} of one `configs:` entry: its data_files (relative to the folder) or its data_dir."""
    patterns = entry.get("data_files")
    if patterns is None:
        return files_in_folder(folder / entry["data_dir"] if entry.get("data_dir") else folder)
    if isinstance(patterns, list) and patterns and isinstance(patterns[0], dict):  # [{split:, path:}, ...]
        patterns = {item["split"]: item["path"] for item in patterns}
    return resolve_data_files(patterns, folder)


def select_config(folder: Path, name, data_dir, dataset: str) -> tuple[dict, dict]:
    """({split: [paths]}, reader options) of the config `name` of a dataset folder, by datasets' rules.

    With a README.md `configs:` section, a name picks its entry (or the default one); without one, the
    only config is "default" and data_dir= picks a subfolder.
    """
    configs = card_configs(folder)
    if not configs:
        if name not in (None, "default"):
            hint = f"; {name!r} is a folder there: read it with data_dir={name!r}" if (folder / name).is_dir() else ""
            raise ValueError(f"BuilderConfig {name!r} not found. Available: ['default'] ({dataset!r} has no "
                             f"README.md `configs:` section{hint})")
        return files_in_folder(folder / data_dir if data_dir else folder), {}
    name = _default_config(configs, dataset) if name is None else name
    if name not in configs:
        raise ValueError(f"BuilderConfig {name!r} not found. Available: {list(configs)}")
    entry = configs[name]
    files = files_in_folder(folder / data_dir) if data_dir else _config_files(entry, folder)
    return files, {key: value for key, value in entry.items() if key not in CONFIG_FILE_KEYS}


def infer_builder(files: dict) -> str:
    builders = {EXTENSION_BUILDERS[Path(p).suffix.lower()] for paths in files.values() for p in paths}
    if len(builders) != 1:
        raise ValueError(f"the data files are of several formats ({sorted(builders)}); pass data_files= for one")
    return builders.pop()


def parse_split(spec: str, sizes: dict) -> list[tuple[str, int, int]]:
    """"train[:10%]+test" -> [(split, start, stop), ...] with rows counted from `sizes`."""
    parts = []
    for piece in spec.split("+"):
        match = re.fullmatch(r"\s*([\w.-]+)\s*(?:\[\s*(-?\d+%?)?\s*:\s*(-?\d+%?)?\s*\])?\s*", piece)
        if not match:
            raise ValueError(f"cannot parse split {piece!r}; write it like 'train', 'train[:10%]' or 'train[10:20]'")
        name, start, stop = match.groups()
        if name not in sizes:
            raise ValueError(f"Unknown split {name!r}. Should be one of {list(sizes)}.")
        n = sizes[name]

        def bound(text, default):
            if text is None:
                return default
            if text.endswith("%"):
                percent = int(text[:-1])
                if not -100 <= percent <= 100:
                    raise ValueError(f"split {piece!r}: a percentage must be within -100% and 100%")
                value = int(round(percent * n / 100.0))
            else:
                value = int(text)
                if not -n <= value <= n:
                    raise ValueError(f"split {piece!r} is out of range: {name!r} has {n} rows")
            return value + n if value < 0 else value

        begin, end = bound(start, 0), bound(stop, n)
        parts.append((name, begin, max(begin, end)))
    return parts


def _file_key(files: dict) -> list:
    return [(split, [(os.path.abspath(p), os.path.getsize(p), os.path.getmtime(p)) for p in paths])
            for split, paths in files.items()]


def _build_split(builder, paths, cache_dir: Path, split: str, fingerprint: str, config: dict) -> Dataset:
    path = cache_dir / f"{split}.arrow"
    if not path.is_file():
        writer = ArrowWriter(path)
        try:
            for table in read_tables(builder, paths, **config):
                writer.write_table(table)
        except TypeError as err:
            writer.abort()
            raise TypeError(f"{err} (reading {', '.join(map(str, paths))})") from None
        except BaseException:
            writer.abort()
            raise
        writer.finish()
    return Dataset(read_arrow(path), combine(fingerprint, split), cache_dir, split)


def load_dataset(path, name=None, data_dir=None, data_files=None, split=None, cache_dir=None, features=None,
                 download_mode=None, keep_in_memory=None, revision=None, token=None, streaming=False,
                 num_proc=None, **config_kwargs):
    """A DatasetDict of every split, or the Dataset of `split` ("train", "train[:10%]", "train+test").

    `path` is a builder ("json", "csv", "text", "parquet", "arrow") with data_files/data_dir,
    a local folder of data files, or a hub dataset id found in the Hugging Face cache (or
    downloaded when online). `name` picks a configuration of a dataset folder (its README.md
    `configs:`), data_dir= a subfolder. Options such as field=, sample_by=, sep= go to the reader.
    """
    path = os.fspath(path)
    if path in READERS:
        builder = path
        base = Path(data_dir) if data_dir else Path.cwd()
        if data_files is None:
            if data_dir is None:
                raise ValueError(f"load_dataset({path!r}) needs data_files= or data_dir=")
            files = files_in_folder(base)
        else:
            files = resolve_data_files(data_files, base)
    else:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            folder = _hub_folder(path, revision)
        if data_files is not None:
            files = resolve_data_files(data_files, folder / data_dir if data_dir else folder)
        else:
            files, options = select_config(folder, name, data_dir, path)
            config_kwargs = {**options, **config_kwargs}
        builder = infer_builder(files)
    if builder == "csv" and "delimiter" not in config_kwargs and "sep" not in config_kwargs:
        if all(p.lower().endswith(".tsv") for paths in files.values() for p in paths):
            config_kwargs["sep"] = "\t"
    if streaming:
        streams = {s: IterableDataset.from_files(builder, paths, split=s, **config_kwargs) for s, paths in files.items()}
        if split is None:
            from .iterable import IterableDatasetDict

            return IterableDatasetDict(streams)
        if split not in streams:
            raise ValueError(f"Unknown split {split!r}. Should be one of {list(streams)}.")
        return streams[split]
    fingerprint = combine(builder, sorted(config_kwargs.items(), key=str), _file_key(files), name)
    folder = Path(cache_dir) if cache_dir else default_cache_root()
    folder = folder / builder / fingerprint
    splits = {s: _build_split(builder, paths, folder, s, fingerprint, config_kwargs) for s, paths in files.items()}
    if features is not None:
        splits = {s: d.cast(features) for s, d in splits.items()}
    if split is None:
        return DatasetDict(splits)
    pieces = parse_split(split, {s: len(d) for s, d in splits.items()})
    parts = [splits[s].select(range(begin, end)) for s, begin, end in pieces]
    result = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    result.split = split
    return result


def _hub_folder(repo_id: str, revision=None) -> Path:
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1:
        raise FileNotFoundError(f"{repo_id} is not a folder, a builder name ({', '.join(READERS)}) or a hub id")
    snapshot = cached_snapshot(repo_id, revision, repo_type="dataset")
    if snapshot is not None:
        return snapshot
    if is_offline():
        raise FileNotFoundError(f"dataset {repo_id!r} is not a local folder and not in the Hugging Face cache, and "
                                "HF_HUB_OFFLINE is set, so it cannot be downloaded")
    return download_snapshot(repo_id, revision, repo_type="dataset",
                             allow_patterns=["README.md", "*.parquet", "*.json", "*.jsonl", "*.csv", "*.tsv", "*.txt", "*.arrow"])
