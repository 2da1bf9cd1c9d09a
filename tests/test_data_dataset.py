"""Dataset / DatasetDict operations against `datasets` on the same data, and the seed's snippets."""

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

import datasets
from leanformers import (AutoTokenizer, DataCollatorWithPadding, Dataset, DatasetDict, Value, concatenate_datasets,
                         load_dataset, load_from_disk)

DATA = {"idx": list(range(20)), "sentence1": [f"the cat sat {i} times" for i in range(20)],
        "sentence2": [f"a dog ran {i * 2} miles" for i in range(20)], "label": [i % 2 for i in range(20)],
        "nested": [{"x": i, "y": str(i)} for i in range(20)]}


def pair():
    return Dataset.from_dict(DATA), datasets.Dataset.from_dict(DATA)


def test_dataset_repr_and_description_match_datasets():
    ours, theirs = pair()
    assert repr(ours) == repr(theirs)
    assert ours.column_names == theirs.column_names
    assert (len(ours), ours.num_rows, ours.num_columns, ours.shape) == (len(theirs), theirs.num_rows,
                                                                        theirs.num_columns, theirs.shape)
    d = DatasetDict(train=ours, test=ours.select(range(3)))
    assert repr(d) == repr(datasets.DatasetDict(train=theirs, test=theirs.select(range(3))))


def test_dataset_getitem_matches_datasets():
    ours, theirs = pair()
    assert ours[3] == theirs[3]
    assert ours[-1] == theirs[-1]
    assert ours[2:7] == theirs[2:7]
    assert ours[::5] == theirs[::5]
    assert ours[[4, 1, 9]] == theirs[[4, 1, 9]]
    assert ours["sentence1"] == list(theirs["sentence1"])
    assert list(ours) == list(theirs)
    with pytest.raises(IndexError, match="out of bounds"):
        ours[20]
    with pytest.raises(KeyError, match="not in the dataset"):
        ours["nope"]


def test_map_filter_select_match_datasets():
    ours, theirs = pair()

    def length(example):
        return {"review_length": len(example["sentence1"].split())}

    def batched_upper(batch):
        return {"upper": [s.upper() for s in batch["sentence2"]]}

    for d in (ours, theirs):
        assert d  # both non-empty
    mapped = [d.map(length).map(batched_upper, batched=True, batch_size=3) for d in (ours, theirs)]
    assert mapped[0].to_list() == mapped[1].to_list()
    with_idx = [d.map(lambda e, i: {"i2": i * 2}, with_indices=True, remove_columns=["nested"]) for d in (ours, theirs)]
    assert with_idx[0].to_list() == with_idx[1].to_list()
    kwargs = [d.map(lambda b, k: {"k": [k] * len(b["idx"])}, batched=True, fn_kwargs={"k": 7}) for d in (ours, theirs)]
    assert kwargs[0]["k"] == list(kwargs[1]["k"])
    filtered = [d.filter(lambda e: e["label"] == 1 and e["idx"] > 4) for d in (ours, theirs)]
    assert filtered[0].to_list() == filtered[1].to_list()
    batched = [d.filter(lambda b: [x % 3 == 0 for x in b["idx"]], batched=True, batch_size=4) for d in (ours, theirs)]
    assert batched[0].to_list() == batched[1].to_list()
    indices = [d.filter(lambda e, i: i % 4 == 0, with_indices=True) for d in (ours, theirs)]
    assert indices[0]["idx"] == list(indices[1]["idx"])
    selected = [d.select([5, 2, 2, 19]) for d in (ours, theirs)]
    assert selected[0].to_list() == selected[1].to_list()


def test_batched_map_can_change_row_count():
    ours, theirs = pair()
    fn = lambda b: {"piece": [w for s in b["sentence1"] for w in s.split()]}  # noqa: E731
    results = [d.map(fn, batched=True, remove_columns=d.column_names) for d in (ours, theirs)]
    assert results[0].to_list() == results[1].to_list()
    with pytest.raises(ValueError, match="remove the input columns"):
        ours.map(fn, batched=True)


def test_columns_operations_match_datasets():
    ours, theirs = pair()
    steps = [lambda d: d.rename_column("label", "labels"),
             lambda d: d.rename_columns({"sentence1": "a", "sentence2": "b"}),
             lambda d: d.remove_columns(["sentence1", "idx"]),
             lambda d: d.select_columns(["label", "idx"]),
             lambda d: d.add_column("extra", list(range(100, 120))),
             lambda d: d.flatten(),
             lambda d: d.sort("sentence2"),
             lambda d: d.sort("idx", reverse=True)]
    for step in steps:
        a, b = step(ours), step(theirs)
        assert a.column_names == b.column_names
        assert a.to_list() == b.to_list()
    assert ours.unique("label") == theirs.unique("label")
    casted = ours.cast_column("label", Value("float32"))
    assert repr(casted.features) == repr(theirs.cast_column("label", datasets.Value("float32")).features)
    assert casted["label"] == [float(x) for x in DATA["label"]]
    with pytest.raises(ValueError, match="cannot cast column 'sentence1'"):
        ours.cast_column("sentence1", Value("int64"))


def test_shuffle_is_deterministic_and_keeps_rows():
    ours, theirs = pair()
    a, b = ours.shuffle(seed=42), ours.shuffle(seed=42)
    assert a["idx"] == b["idx"]
    assert a["idx"] != ours["idx"]
    assert sorted(a["idx"]) == sorted(theirs.shuffle(seed=42)["idx"]) == DATA["idx"]
    assert ours.shuffle(seed=1)["idx"] != a["idx"]


def test_train_test_split_sizes_match_datasets():
    ours, theirs = pair()
    for kwargs in (dict(test_size=0.2), dict(test_size=3), dict(train_size=0.5, test_size=0.3), dict()):
        a, b = ours.train_test_split(seed=0, **kwargs), theirs.train_test_split(seed=0, **kwargs)
        assert a.num_rows == b.num_rows
        assert sorted(a["train"]["idx"] + a["test"]["idx"]) == sorted(list(b["train"]["idx"]) + list(b["test"]["idx"]))
        assert a["test"]["idx"] == ours.train_test_split(seed=0, **kwargs)["test"]["idx"]
    assert ours.train_test_split(test_size=0.25, shuffle=False)["test"]["idx"] == list(range(15, 20))
    with pytest.raises(ValueError, match="at least one row"):
        ours.train_test_split(test_size=0.0)


def test_formats_match_datasets():
    ours, theirs = pair()
    for kind in ("torch", "numpy"):
        a, b = ours.with_format(kind), theirs.with_format(kind)
        row_a, row_b = a[0], b[0]
        assert row_a.keys() == row_b.keys()
        assert type(row_a["label"]) is type(row_b["label"])
        assert int(row_a["label"]) == int(row_b["label"]) and row_a["sentence1"] == row_b["sentence1"]
        batch_a, batch_b = a[:4], b[:4]
        assert type(batch_a["idx"]) is type(batch_b["idx"])
        assert batch_a["idx"].tolist() == batch_b["idx"].tolist()
        if kind == "torch":
            assert batch_a["idx"].dtype == batch_b["idx"].dtype == torch.int64
    limited = ours.with_format("torch", columns=["label"])
    assert list(limited[0]) == ["label"]
    both = ours.with_format("torch", columns=["label"], output_all_columns=True)
    assert isinstance(both[0]["label"], torch.Tensor) and isinstance(both[0]["idx"], int)
    ours.set_format("numpy")
    assert isinstance(ours["idx"], np.ndarray)
    ours.reset_format()
    assert ours["idx"] == DATA["idx"]
    with pytest.raises(ValueError, match="format type"):
        ours.set_format("tensorflow")


def test_to_files_round_trip(tmp_path):
    ours, theirs = pair()
    ours.to_json(tmp_path / "out.jsonl")
    assert load_dataset("json", data_files=str(tmp_path / "out.jsonl"), split="train").to_list() == ours.to_list()
    flat = ours.remove_columns("nested")
    flat.to_csv(tmp_path / "out.csv")
    assert datasets.load_dataset("csv", data_files=str(tmp_path / "out.csv"), split="train",
                                 cache_dir=str(tmp_path / "hf")).to_list() == flat.to_list()
    flat.to_parquet(tmp_path / "out.parquet")
    assert datasets.Dataset.from_parquet(str(tmp_path / "out.parquet"),
                                         cache_dir=str(tmp_path / "hf")).to_list() == flat.to_list()
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == theirs.to_list()


def test_save_to_disk_and_load_from_disk(tmp_path):
    ours, _ = pair()
    ours.set_format("torch", columns=["label"])
    ours.save_to_disk(tmp_path / "one")
    back = load_from_disk(tmp_path / "one")
    assert back.to_list() == ours.to_list() and back.format == ours.format
    d = DatasetDict(train=ours, test=ours.select(range(2)))
    d.save_to_disk(tmp_path / "dict")
    loaded = load_from_disk(tmp_path / "dict")
    assert isinstance(loaded, DatasetDict) and loaded.num_rows == {"train": 20, "test": 2}
    with pytest.raises(FileNotFoundError, match="save_to_disk"):
        load_from_disk(tmp_path)


def test_from_list_from_generator_and_concatenate(tmp_path):
    rows = [{"a": i, "b": str(i)} for i in range(2500)]
    assert Dataset.from_list(rows).to_list() == datasets.Dataset.from_list(rows).to_list()

    def gen(n):
        for i in range(n):
            yield {"a": i, "b": str(i)}

    made = Dataset.from_generator(gen, gen_kwargs={"n": 2500}, cache_dir=tmp_path)
    assert made.to_list() == rows
    assert Dataset.from_generator(gen, gen_kwargs={"n": 2500}, cache_dir=tmp_path)._fingerprint == made._fingerprint
    both = concatenate_datasets([made.select(range(3)), Dataset.from_list(rows[:2])])
    theirs = datasets.concatenate_datasets([datasets.Dataset.from_list(rows[:3]), datasets.Dataset.from_list(rows[:2])])
    assert both.to_list() == theirs.to_list()
    wide = concatenate_datasets([Dataset.from_dict({"x": [1, 2]}), Dataset.from_dict({"y": [3, 4]})], axis=1)
    assert wide.to_list() == [{"x": 1, "y": 3}, {"x": 2, "y": 4}]
    with pytest.raises(ValueError, match="same columns"):
        concatenate_datasets([Dataset.from_dict({"x": [1]}), Dataset.from_dict({"y": [1]})])


def test_seed_dataset_snippets(tmp_path):
    """The seed's Dataset section: load, batched map with a tokenizer, column edits, torch format, DataLoader."""
    rows = [{"sentence1": f"The company said {i} shares rose.", "sentence2": f"Shares rose by {i}.",
             "label": i % 2, "idx": i} for i in range(24)]
    files = {}
    for split, part in (("train", rows[:16]), ("validation", rows[16:])):
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
        files[split] = str(path)
    tokenizer = AutoTokenizer.from_pretrained("all-minilm-l6-v2")

    def tokenize_function(example):
        return tokenizer(example["sentence1"], example["sentence2"], truncation=True)

    ours = load_dataset("json", data_files=files).map(tokenize_function, batched=True)
    theirs = datasets.load_dataset("json", data_files=files, cache_dir=str(tmp_path / "hf")).map(tokenize_function,
                                                                                                 batched=True)
    assert repr(ours) == repr(theirs)
    assert ours["train"].to_list() == theirs["train"].to_list()
    review = ours["train"].map(lambda e: {"review_length": len(e["sentence1"].split())})
    assert review["review_length"] == [6] * 16
    assert len(ours["train"].filter(lambda e: e["label"] == 1)) == 8
    ours = ours.remove_columns(["sentence1", "sentence2", "idx"]).rename_column("label", "labels")
    ours.set_format("torch")
    assert ours["train"].column_names == ["labels", "input_ids", "token_type_ids", "attention_mask"]
    loader = DataLoader(ours["train"], shuffle=True, batch_size=8, collate_fn=DataCollatorWithPadding(tokenizer))
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 8 and batch["labels"].dtype == torch.int64
    assert batch["attention_mask"].shape == batch["input_ids"].shape
