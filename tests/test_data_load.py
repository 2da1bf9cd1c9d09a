"""load_dataset against `datasets` (the oracle) on the same local files, plus the bad-input errors."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import datasets
from leanformers import load_dataset
from leanformers.data import Dataset, DatasetDict

ROWS = [{"id": i, "text": f"row number {i}", "score": i * 0.5, "tags": ["a", "b"][: i % 3]} for i in range(50)]


def oracle(tmp_path, *args, **kwargs):
    return datasets.load_dataset(*args, cache_dir=str(tmp_path / "hf-cache"), **kwargs)


def same(ours, theirs):
    if isinstance(theirs, datasets.DatasetDict):
        assert isinstance(ours, DatasetDict)
        assert list(ours) == list(theirs)
        for split in theirs:
            same(ours[split], theirs[split])
        return
    assert isinstance(ours, Dataset)
    assert ours.column_names == theirs.column_names
    assert len(ours) == len(theirs)
    assert ours.to_list() == theirs.to_list()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS[:40])
    write_jsonl(folder / "test.jsonl", ROWS[40:])
    (folder / "squad.json").write_text(json.dumps({"version": "1.1", "data": [
        {"title": "T1", "paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q"}]}]},
        {"title": "T2", "paragraphs": []}]}))
    (folder / "array.json").write_text(json.dumps(ROWS[:5]))
    (folder / "table.csv").write_text("a,b,c\n1,x,0.5\n2,y,1.5\n3,z,2.5\n")
    (folder / "table.tsv").write_text("a\tb\n1\tx\n2\ty\n")
    (folder / "doc.txt").write_text("first line\nsecond line\n\nafter blank\r\nlast without newline")
    pq.write_table(pa.Table.from_pylist(ROWS), folder / "rows.parquet")
    with pa.ipc.new_stream(str(folder / "rows.arrow"), pa.Table.from_pylist(ROWS[:7]).schema) as w:
        w.write_table(pa.Table.from_pylist(ROWS[:7]))
    return folder


def test_load_dataset_json_lines_matches_datasets(files, tmp_path):
    same(load_dataset("json", data_files=str(files / "train.jsonl")),
         oracle(tmp_path, "json", data_files=str(files / "train.jsonl")))


def test_load_dataset_json_dict_of_splits_matches_datasets(files, tmp_path):
    data_files = {"train": str(files / "train.jsonl"), "test": str(files / "test.jsonl")}
    ours = load_dataset("json", data_files=data_files)
    same(ours, oracle(tmp_path, "json", data_files=data_files))
    assert repr(ours) == repr(oracle(tmp_path, "json", data_files=data_files))


def test_load_dataset_json_field_matches_datasets(files, tmp_path):
    ours = load_dataset("json", data_files=str(files / "squad.json"), field="data")
    same(ours, oracle(tmp_path, "json", data_files=str(files / "squad.json"), field="data"))
    assert ours["train"].column_names == ["title", "paragraphs"]


def test_load_dataset_json_array_matches_datasets(files, tmp_path):
    same(load_dataset("json", data_files=str(files / "array.json")),
         oracle(tmp_path, "json", data_files=str(files / "array.json")))


def test_load_dataset_csv_and_tsv_match_datasets(files, tmp_path):
    same(load_dataset("csv", data_files=str(files / "table.csv")),
         oracle(tmp_path, "csv", data_files=str(files / "table.csv")))
    same(load_dataset("csv", data_files=str(files / "table.tsv"), sep="\t"),
         oracle(tmp_path, "csv", data_files=str(files / "table.tsv"), sep="\t"))


@pytest.mark.parametrize("sample_by", ["line", "paragraph", "document"])
def test_load_dataset_text_matches_datasets(files, tmp_path, sample_by):
    same(load_dataset("text", data_files=str(files / "doc.txt"), sample_by=sample_by),
         oracle(tmp_path, "text", data_files=str(files / "doc.txt"), sample_by=sample_by))


def test_load_dataset_parquet_and_arrow_match_datasets(files, tmp_path):
    same(load_dataset("parquet", data_files=str(files / "rows.parquet")),
         oracle(tmp_path, "parquet", data_files=str(files / "rows.parquet")))
    same(load_dataset("arrow", data_files=str(files / "rows.arrow")),
         oracle(tmp_path, "arrow", data_files=str(files / "rows.arrow")))


def test_load_dataset_glob_list_and_data_dir(files, tmp_path):
    ours = load_dataset("json", data_dir=str(files), data_files="t*.jsonl", split="train")
    theirs = oracle(tmp_path, "json", data_dir=str(files), data_files="t*.jsonl", split="train")
    same(ours, theirs)
    listed = load_dataset("json", data_files=[str(files / "train.jsonl"), str(files / "test.jsonl")], split="train")
    assert len(listed) == 50


@pytest.mark.parametrize("split", ["train", "train[:10%]", "train[10:20]", "train[-5:]", "train[25%:75%]",
                                   "train+test", "train[:3]+test[-2:]"])
def test_load_dataset_split_slices_match_datasets(files, tmp_path, split):
    data_files = {"train": str(files / "train.jsonl"), "test": str(files / "test.jsonl")}
    same(load_dataset("json", data_files=data_files, split=split),
         oracle(tmp_path, "json", data_files=data_files, split=split))


def test_load_dataset_folder_splits_by_file_names(tmp_path):
    folder = tmp_path / "repo"
    (folder / "data").mkdir(parents=True)
    write_jsonl(folder / "data" / "train-00000.jsonl", ROWS[:10])
    write_jsonl(folder / "data" / "validation-00000.jsonl", ROWS[10:13])
    write_jsonl(folder / "data" / "test-00000.jsonl", ROWS[13:15])
    ours = load_dataset(str(folder))
    same(ours, oracle(tmp_path, str(folder)))
    assert ours.num_rows == {"train": 10, "validation": 3, "test": 2}


def test_load_dataset_hub_id_from_local_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    repo = hub / "datasets--someorg--tiny"
    snapshot = repo / "snapshots" / "abc123"
    (snapshot / "data").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    pq.write_table(pa.Table.from_pylist(ROWS[:8]), snapshot / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(ROWS[8:11]), snapshot / "data" / "test-00000-of-00001.parquet")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    ours = load_dataset("someorg/tiny")
    assert ours.num_rows == {"train": 8, "test": 3}
    assert ours["test"].to_list() == pa.Table.from_pylist(ROWS[8:11]).to_pylist()
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache"):
        load_dataset("someorg/missing")


def test_load_dataset_is_memory_mapped_and_reused(tmp_path):
    path = write_jsonl(tmp_path / "big.jsonl", ROWS * 200)
    first = load_dataset("json", data_files=str(path), split="train")
    before = pa.total_allocated_bytes()
    again = load_dataset("json", data_files=str(path), split="train")
    assert first._fingerprint == again._fingerprint
    assert (again._cache_dir / "train.arrow").is_file()
    # the second load maps the cached Arrow file instead of parsing into new memory
    assert pa.total_allocated_bytes() - before < again.data.nbytes / 10
    assert again.to_list() == first.to_list()


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3,,}\n{"a": 4}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 3: not valid JSON"):
        load_dataset("json", data_files=str(path))


def test_missing_field_is_named(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"version": 1, "rows": [{"a": 1}]}))
    with pytest.raises(KeyError, match=r"no field 'data'.*\['rows', 'version'\]"):
        load_dataset("json", data_files=str(path), field="data")


def test_conflicting_types_name_column_and_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n{"a": "three", "b": "z"}\n')
    with pytest.raises(TypeError, match=r"mixed\.jsonl, line 3: field 'a' is str, but number on line 1"):
        load_dataset("json", data_files=str(path))


def test_empty_file_is_an_error(tmp_path):
    for name in ("empty.jsonl", "empty.csv"):
        path = tmp_path / name
        path.write_text("")
        with pytest.raises(ValueError, match="is empty"):
            load_dataset(name.split(".")[1].replace("jsonl", "json"), data_files=str(path))


def test_unknown_split_and_out_of_range_slice(files):
    data_files = {"train": str(files / "train.jsonl")}
    with pytest.raises(ValueError, match=r"Unknown split 'validation'. Should be one of \['train'\]"):
        load_dataset("json", data_files=data_files, split="validation")
    with pytest.raises(ValueError, match="out of range"):
        load_dataset("json", data_files=data_files, split="train[10:400]")
    with pytest.raises(ValueError, match="within -100% and 100%"):
        load_dataset("json", data_files=data_files, split="train[:150%]")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("json", data_files=str(files / "nope.jsonl"))


def test_csv_empty_cells_are_none_as_datasets(tmp_path):
    # The course's drug-review filter: `condition is not None` must drop the rows with no condition.
    lines = ["id,condition,rating,score,when,flag"]
    for i in range(30):
        condition = '""' if i % 6 == 0 else "" if i % 3 == 0 else f'"condition {i % 4}"'  # quoted, bare, text
        rating = "" if i % 5 == 0 else str(i % 10)
        score = "NA" if i % 7 == 0 else f"{i / 4}"
        flag = "" if i % 4 == 0 else ("True" if i % 2 else "False")
        lines.append(f'{i},{condition},{rating},{score},2020-01-{i % 28 + 1:02d},{flag}')
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(lines) + "\n")
    ours = load_dataset("csv", data_files=str(path))["train"]
    theirs = oracle(tmp_path, "csv", data_files=str(path))["train"]
    assert repr(ours.features) == repr(theirs.features)
    for a, b in zip(ours.to_list(), theirs.to_list(), strict=True):
        assert a == b
    kept, expected = ours.filter(lambda x: x["condition"] is not None), theirs.filter(lambda x: x["condition"] is not None)
    assert len(kept) == len(expected) < len(ours)
    assert kept["id"] == list(expected["id"])
