"""load_dataset(..., streaming=True): lazy reading, transforms, resumable state, bounded memory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import datasets
from leanformers import IterableDataset, load_dataset


@pytest.fixture
def shards(tmp_path):
    paths = []
    for s in range(3):
        path = tmp_path / f"part-{s}.jsonl"
        path.write_text("".join(json.dumps({"id": s * 100 + i, "text": f"t{s}-{i}"}) + "\n" for i in range(40)))
        paths.append(str(path))
    return paths


def test_streaming_rows_match_datasets(shards, tmp_path):
    ours = load_dataset("json", data_files=shards, split="train", streaming=True)
    theirs = datasets.load_dataset("json", data_files=shards, split="train", streaming=True,
                                   cache_dir=str(tmp_path / "hf"))
    assert isinstance(ours, IterableDataset) and ours.num_shards == 3
    assert list(ours) == list(theirs)
    assert ours.column_names == ["id", "text"]
    pipeline = lambda d: d.map(lambda e: {"n": len(e["text"])}).filter(lambda e: e["id"] % 3 == 0).skip(2).take(10)  # noqa: E731
    assert list(pipeline(ours)) == list(pipeline(theirs))
    batched = lambda d: d.map(lambda b: {"up": [t.upper() for t in b["text"]]}, batched=True, batch_size=7)  # noqa: E731
    assert list(batched(ours)) == list(batched(theirs))
    assert list(ours.batch(50))[-1]["id"] == list(theirs.batch(50))[-1]["id"]
    assert list(ours.rename_column("text", "t").remove_columns("id"))[0] == {"t": "t0-0"}


def test_streaming_dict_and_unknown_split(shards):
    streams = load_dataset("json", data_files={"train": shards[:2], "test": shards[2]}, streaming=True)
    assert sorted(streams) == ["test", "train"]
    assert len(list(streams["test"])) == 40
    with pytest.raises(ValueError, match="Unknown split"):
        load_dataset("json", data_files=shards, split="validation", streaming=True)


def test_streaming_shuffle_is_seeded(shards):
    ds = load_dataset("json", data_files=shards, split="train", streaming=True)
    a = [r["id"] for r in ds.shuffle(seed=3, buffer_size=20)]
    b = [r["id"] for r in ds.shuffle(seed=3, buffer_size=20)]
    assert a == b and sorted(a) == sorted(r["id"] for r in ds) and a != [r["id"] for r in ds]
    assert [r["id"] for r in ds.shuffle(seed=4, buffer_size=20)] != a


@pytest.mark.parametrize("shuffle", [False, True])
def test_streaming_state_dict_resumes_exactly(shards, shuffle):
    ds = load_dataset("json", data_files=shards, split="train", streaming=True).map(lambda e: {"x": e["id"] * 2})
    if shuffle:
        ds = ds.shuffle(seed=0, buffer_size=16)
    full = list(ds)
    it = iter(ds)
    head = [next(it) for _ in range(37)]
    state = ds.state_dict()
    resumed = load_dataset("json", data_files=shards, split="train", streaming=True).map(lambda e: {"x": e["id"] * 2})
    if shuffle:
        resumed = resumed.shuffle(seed=0, buffer_size=16)
    resumed.load_state_dict(state)
    assert head + list(resumed) == full


def test_streaming_torch_format(shards):
    ds = load_dataset("json", data_files=shards, split="train", streaming=True).select_columns(["id"])
    row = next(iter(ds.with_format("torch")))
    assert isinstance(row["id"], torch.Tensor) and row["id"].dtype == torch.int64


MEMORY_SCRIPT = """
import resource, sys
from leanformers import load_dataset
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
count = 0
chars = 0
for row in load_dataset("json", data_files=sys.argv[1], split="train", streaming=True):
    count += 1
    chars += len(row["text"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, chars, (peak - base) // 1024)
"""


def test_streaming_a_large_jsonl_uses_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"text": "x" * 980}) + "\n"
    rows = 300 * 1024 * 1024 // len(line)
    with open(path, "w") as f:
        block = line * 1000
        for _ in range(rows // 1000):
            f.write(block)
    assert path.stat().st_size > 290 * 1024 * 1024
    script = tmp_path / "stream.py"
    script.write_text(MEMORY_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[1], env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    count, chars, growth_mb = map(int, done.stdout.split())
    assert count == rows // 1000 * 1000 and chars == count * 980
    assert growth_mb < 200, f"peak RSS grew by {growth_mb} MB while streaming a 300 MB file"
