"""The indices mapping: select/shuffle/filter/sort/train_test_split share the parent's table and copy no rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import datasets
import leanformers.data.arrow_dataset as arrow_dataset
from leanformers import Value, concatenate_datasets, load_dataset, load_from_disk


@pytest.fixture(params=["in_memory_indices", "indices_file"])
def pair(request, tmp_path, monkeypatch):
    """The same JSONL loaded by leanformers (memory-mapped cache file) and by datasets."""
    if request.param == "indices_file":  # every mapping written to and memory-mapped from the cache
        monkeypatch.setattr(arrow_dataset, "INDICES_ON_DISK_ROWS", 0)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": f"row {i}", "v": (i * 37) % 101 / 10,
                                        "tags": [i, i + 1]}) + "\n" for i in range(200)))
    ours = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "ours"))
    theirs = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    return ours, theirs


def rows(d):
    return [dict(r) for r in d]


def test_selections_match_datasets_and_share_the_table(pair):
    ours, theirs = pair
    cases = [lambda d: d.shuffle(seed=42), lambda d: d.select([5, 3, 190, 3, 0]),
             lambda d: d.filter(lambda e: e["id"] % 3 == 0), lambda d: d.sort("v"),
             lambda d: d.shuffle(seed=7).sort(["v", "id"], reverse=[True, False]),
             lambda d: d.shuffle(seed=1).filter(lambda e, i: i % 2 == 0, with_indices=True),
             lambda d: d.shuffle(seed=1).filter(lambda b: [t.endswith("1") for t in b["text"]], batched=True,
                                                batch_size=16),
             lambda d: d.select(range(10, 50)), lambda d: d.shuffle(seed=3).select([])]
    for case in cases:
        a, b = case(ours), case(theirs)
        assert a.to_list() == b.to_list() == rows(a) == a.flatten_indices().to_list()
        assert len(a) == len(b) and a.to_dict() == b.to_dict()
    shuffled = ours.shuffle(seed=42)
    assert shuffled._indices is not None and shuffled._data is ours._data  # no row copied
    assert ours.select(range(10, 50))._indices is None  # a contiguous run is a slice
    assert sorted(r["id"] for r in shuffled) == list(range(200))
    assert shuffled["id"] == ours.shuffle(seed=42)["id"] != ours.shuffle(seed=43)["id"]
    assert shuffled._fingerprint == ours.shuffle(seed=42)._fingerprint != ours.shuffle(seed=43)._fingerprint


def test_reads_through_the_mapping_match_datasets(pair):
    ours, theirs = pair
    a, b = ours.shuffle(seed=5), theirs.shuffle(seed=5)
    assert a[3] == b[3] and a[-1] == b[-1] and a[2:7] == b[2:7] and a[::9] == b[::9]
    assert a[[4, 1, 9, 4]] == b[[4, 1, 9, 4]] and a[190:] == b[190:]
    assert a["text"] == list(b["text"]) and a.unique("id") == b.unique("id")
    assert [x["id"] for x in a.iter(batch_size=7)] == [x["id"] for x in b.iter(batch_size=7)]
    at, bt = a.with_format("torch"), b.with_format("torch")
    assert torch.equal(at["id"], bt[:]["id"]) and torch.equal(at[0]["tags"], bt[0]["tags"])
    assert torch.equal(at[5:9]["tags"], bt[5:9]["tags"])
    ours_batches = list(DataLoader(at.select_columns(["id", "v"]), batch_size=16))
    theirs_batches = list(DataLoader(bt.select_columns(["id", "v"]), batch_size=16))
    assert len(ours_batches) == len(theirs_batches) == 13
    assert all(torch.equal(x["id"], y["id"]) and torch.allclose(x["v"], y["v"])
               for x, y in zip(ours_batches, theirs_batches, strict=True))
    assert a.with_format("numpy")["v"].tolist() == list(b.with_format("numpy")["v"])


def test_chained_operations_and_train_test_split_match_datasets(pair):
    ours, theirs = pair

    def chain(d):
        return (d.shuffle(seed=1).select(range(0, 150, 2)).filter(lambda e: e["id"] % 2 == 0)
                .map(lambda e: {"n": e["id"] * 10, "text": e["text"] + "!"}))

    a, b = chain(ours), chain(theirs)
    assert a.to_list() == b.to_list() and len(a) > 10
    assert a._indices is None  # map writes its output rows
    flat = ours.shuffle(seed=1).flatten_indices().select(range(0, 150, 2)).flatten_indices()
    assert chain(ours).to_list() == flat.filter(lambda e: e["id"] % 2 == 0).map(
        lambda e: {"n": e["id"] * 10, "text": e["text"] + "!"}).to_list()
    mapped = ours.shuffle(seed=2).map(lambda b, idx: {"i": idx}, batched=True, batch_size=13, with_indices=True)
    assert mapped.to_list() == theirs.shuffle(seed=2).map(lambda b, idx: {"i": idx}, batched=True, batch_size=13,
                                                          with_indices=True).to_list()
    sharded = ours.shuffle(seed=2).filter(lambda e: e["id"] % 5 != 0, num_proc=2).map(
        lambda e: {"n": -e["id"]}, num_proc=2)
    assert sharded.to_list() == theirs.shuffle(seed=2).filter(lambda e: e["id"] % 5 != 0).map(
        lambda e: {"n": -e["id"]}).to_list()
    assert ours.select([7, 3])._fingerprint == ours.select([7, -197])._fingerprint != ours.select([3, 7])._fingerprint
    for kwargs in ({"test_size": 0.2, "seed": 3}, {"test_size": 31, "shuffle": False}, {"train_size": 0.5, "seed": 0}):
        x, y = ours.train_test_split(**kwargs), theirs.train_test_split(**kwargs)
        assert x["train"].to_list() == y["train"].to_list() and x["test"].to_list() == y["test"].to_list()
    split = ours.shuffle(seed=9).train_test_split(test_size=0.1, seed=4)
    again = ours.shuffle(seed=9).flatten_indices().train_test_split(test_size=0.1, seed=4)
    assert split["test"].to_list() == again["test"].to_list() and split["train"]._data is ours._data


def test_outputs_and_column_operations_with_a_mapping(pair, tmp_path):
    ours, theirs = pair
    a, b = ours.shuffle(seed=11).select(range(120)), theirs.shuffle(seed=11).select(range(120))
    expected = b.to_list()
    a.save_to_disk(tmp_path / "saved")
    loaded = load_from_disk(tmp_path / "saved")
    assert loaded.to_list() == expected and loaded._indices is None
    a.to_parquet(tmp_path / "x.parquet")
    assert load_dataset("parquet", data_files=str(tmp_path / "x.parquet"), split="train").to_list() == expected
    a.to_json(tmp_path / "x.jsonl")
    assert [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()] == expected
    a.select_columns(["id", "text"]).to_csv(tmp_path / "x.csv")
    assert load_dataset("csv", data_files=str(tmp_path / "x.csv"), split="train").to_list() == \
        b.select_columns(["id", "text"]).to_list()
    assert a.to_pandas()["id"].tolist() == [r["id"] for r in expected]
    assert concatenate_datasets([a, ours.select([0, 1]), a.select([3, 2])]).to_list() == \
        datasets.concatenate_datasets([b, theirs.select([0, 1]), b.select([3, 2])]).to_list()
    side = concatenate_datasets([a.select_columns(["id"]), a.select_columns(["text"]).rename_column("text", "t")],
                                axis=1)
    assert side.to_list() == [{"id": r["id"], "t": r["text"]} for r in expected]
    assert a.add_column("k", list(range(120))).to_list() == b.add_column("k", list(range(120))).to_list()
    assert a.cast_column("id", Value("float32")).to_list() == b.cast_column("id", datasets.Value("float32")).to_list()
    assert a.rename_column("id", "j").remove_columns("tags").to_list() == \
        b.rename_column("id", "j").remove_columns("tags").to_list()


def test_filter_cache_keeps_the_mapping_deterministic(pair, tmp_path):
    ours, _ = pair
    log = str(tmp_path / "calls.txt")  # a closure over a path: the same function value on every call

    def keep(batch):
        with open(log, "a") as f:
            f.write("call\n")
        return [i % 4 == 1 for i in batch["id"]]

    first = ours.shuffle(seed=6).filter(keep, batched=True)
    again = ours.shuffle(seed=6).filter(keep, batched=True)
    other = ours.shuffle(seed=8).filter(keep, batched=True)
    assert Path(log).read_text().count("call") == 2  # the seed-6 result came from its cache file the second time
    assert first._fingerprint == again._fingerprint != other._fingerprint
    assert first.to_list() == again.to_list() != other.to_list()
    assert sorted(r["id"] for r in other) == sorted(r["id"] for r in first)
    assert list(ours._cache_dir.glob(f"indices-{first._fingerprint}.arrow"))
    assert first._data is ours._data and first.map(lambda e: {"d": e["id"] * 2})["d"] == [r["id"] * 2 for r in first]


MEMORY_SCRIPT = """
import sys
import psutil
from leanformers import load_dataset

process = psutil.Process()

def anonymous_mb():  # resident memory that is not pages of mapped files
    info = process.memory_info()
    return (info.rss - info.shared) / 2**20

ds = load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[2])
base = anonymous_mb()
shuffled = ds.shuffle(seed=0)
after_shuffle = anonymous_mb() - base
count = chars = 0
peak = 0.0
for batch in shuffled.iter(batch_size=1000):
    count += len(batch["text"])
    chars += sum(map(len, batch["text"]))
    peak = max(peak, anonymous_mb() - base)
picked = shuffled.select(range(0, len(shuffled), 1000)).filter(lambda e: e["id"] % 2 == 0)
ok = sorted(picked["id"]) == sorted(i for i in shuffled[::1000]["id"] if i % 2 == 0) and picked._data is ds._data
print(len(ds), count, chars, int(after_shuffle), int(peak), ok)
"""


def test_shuffle_of_a_large_memory_mapped_dataset_copies_no_rows(tmp_path):
    path = tmp_path / "big.jsonl"
    rows = 250_000
    with open(path, "w") as f:
        for start in range(0, rows, 1000):
            f.write("".join(json.dumps({"id": i, "text": "x" * 1000}) + "\n" for i in range(start, start + 1000)))
    cache = tmp_path / "cache"
    load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))  # writes the Arrow file
    arrow_mb = sum(f.stat().st_size for f in cache.rglob("*.arrow")) / 2**20
    assert arrow_mb > 230
    script = tmp_path / "shuffle.py"
    script.write_text(MEMORY_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(path), str(cache)], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[1], env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    n, count, chars, after_shuffle, peak, ok = done.stdout.split()
    assert int(n) == int(count) == rows and int(chars) == rows * 1000 and ok == "True"
    assert int(after_shuffle) < 50, f"shuffle of a {arrow_mb:.0f} MB table grew memory by {after_shuffle} MB"
    assert int(peak) < 80, f"iterating the shuffled {arrow_mb:.0f} MB table grew memory by {peak} MB"
