"""DatasetDict: one Dataset per split, with the Dataset methods applied to every split."""

import json
import textwrap
from pathlib import Path

from ..files import write_atomic


class DatasetDict(dict):
    """{split name: Dataset}; transforms return a new DatasetDict, set_format changes every split."""

    def __repr__(self) -> str:
        body = "\n".join(f"{split}: {dataset!r}" for split, dataset in self.items())
        return f"DatasetDict({{\n{textwrap.indent(body, '    ')}\n}})"

    def _apply(self, method: str, *args, **kwargs) -> "DatasetDict":
        return DatasetDict({split: getattr(dataset, method)(*args, **kwargs) for split, dataset in self.items()})

    @property
    def column_names(self) -> dict:
        return {split: d.column_names for split, d in self.items()}

    @property
    def num_rows(self) -> dict:
        return {split: d.num_rows for split, d in self.items()}

    @property
    def num_columns(self) -> dict:
        return {split: d.num_columns for split, d in self.items()}

    @property
    def shape(self) -> dict:
        return {split: d.shape for split, d in self.items()}

    def map(self, function=None, **kwargs):
        return self._apply("map", function, **kwargs)

    def filter(self, function=None, **kwargs):
        return self._apply("filter", function, **kwargs)

    def shuffle(self, seed=None, **kwargs):
        return self._apply("shuffle", seed, **kwargs)

    def sort(self, column_names, **kwargs):
        return self._apply("sort", column_names, **kwargs)

    def rename_column(self, original_column_name, new_column_name):
        return self._apply("rename_column", original_column_name, new_column_name)

    def rename_columns(self, column_mapping):
        return self._apply("rename_columns", column_mapping)

    def remove_columns(self, column_names):
        return self._apply("remove_columns", column_names)

    def select_columns(self, column_names):
        return self._apply("select_columns", column_names)

    def cast_column(self, column, feature):
        return self._apply("cast_column", column, feature)

    def cast(self, features):
        return self._apply("cast", features)

    def class_encode_column(self, column, include_nulls=False):
        return self._apply("class_encode_column", column, include_nulls)

    def flatten(self, max_depth=16):
        return self._apply("flatten", max_depth)

    def unique(self, column) -> dict:
        return {split: d.unique(column) for split, d in self.items()}

    def set_format(self, type=None, columns=None, output_all_columns=False):
        for dataset in self.values():
            dataset.set_format(type, columns, output_all_columns)

    def reset_format(self):
        self.set_format(None)

    def with_format(self, type=None, columns=None, output_all_columns=False):
        return self._apply("with_format", type, columns, output_all_columns)

    def save_to_disk(self, dataset_dict_path, **unused):
        folder = Path(dataset_dict_path)
        folder.mkdir(parents=True, exist_ok=True)
        for split, dataset in self.items():
            dataset.save_to_disk(folder / split)
        write_atomic(folder / "dataset_dict.json", json.dumps({"splits": list(self)}).encode())
