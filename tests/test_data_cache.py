"""The map/filter cache: deterministic keys, reuse in a new process, clear errors for unhashable functions."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from leanformers import load_dataset
from leanformers.data import Dataset, UnhashableError
from leanformers.data.fingerprint import hash_value

SCRIPT = """
import sys
from leanformers import load_dataset

calls_file = sys.argv[2]
suffix = "!"

def shout(batch):
    with open(calls_file, "a") as f:
        f.write("call\\n")
    return {"loud": [t.upper() + suffix for t in batch["text"]]}

ds = load_dataset("json", data_files=sys.argv[1], split="train")
out = ds.map(shout, batched=True, batch_size=4, num_proc=int(sys.argv[3]))
kept = out.filter(lambda e: e["n"] % 2 == 0)
print(out._fingerprint, len(kept), out["loud"][0])
"""


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"n": i, "text": f"row {i}"}) + "\n" for i in range(10)))
    return path


def run_script(tmp_path, data_file, calls, num_proc=1, cache=None):
    env = dict(os.environ, LEANFORMERS_CACHE=str(cache or tmp_path / "cache"))
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(data_file), str(calls), str(num_proc)], env=env,
                          capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_cached_map_is_not_recomputed_in_a_new_process(tmp_path, data_file):
    calls = tmp_path / "calls.txt"
    first = run_script(tmp_path, data_file, calls)
    assert calls.read_text().count("call") == 3  # 10 rows in batches of 4
    second = run_script(tmp_path, data_file, calls)
    assert calls.read_text().count("call") == 3  # loaded from the cache file: no new call
    assert first == second == [first[0], "5", "ROW", "0!"]


def test_cache_key_ignores_num_proc_and_cache_location(tmp_path, data_file):
    calls = tmp_path / "calls.txt"
    one = run_script(tmp_path, data_file, calls, num_proc=1, cache=tmp_path / "a")
    two = run_script(tmp_path, data_file, calls, num_proc=2, cache=tmp_path / "b")
    assert one == two
    assert calls.read_text().count("call") == 3 + 4  # two shards of 5 rows: 2 + 2 batches
    run_script(tmp_path, data_file, calls, num_proc=2, cache=tmp_path / "a")
    assert calls.read_text().count("call") == 7  # the num_proc=1 result is reused by num_proc=2


def test_cache_key_follows_code_closure_and_arguments(tmp_path, data_file):
    ds = load_dataset("json", data_files=str(data_file), split="train")

    def make(suffix):
        return lambda e: {"t": e["text"] + suffix}

    a, b, c = ds.map(make("x")), ds.map(make("x")), ds.map(make("y"))
    assert a._fingerprint == b._fingerprint != c._fingerprint
    assert c["t"][0] == "row 0y"
    assert ds.map(make("x"), batched=False)._fingerprint == a._fingerprint
    assert ds.map(lambda b: b, batched=True)._fingerprint != ds.map(lambda b: b, batched=True, batch_size=3)._fingerprint
    assert ds.map(make("x"), load_from_cache_file=False)["t"] == a["t"]
    assert len(list(ds._cache_dir.glob("cache-*.arrow"))) >= 3
    assert hash_value(make("x")) == hash_value(make("x")) != hash_value(make("z"))


def test_unhashable_function_is_named(tmp_path, data_file):
    ds = load_dataset("json", data_files=str(data_file), split="train")
    lock = threading.Lock()

    def locked(example):
        with lock:
            return {"m": example["n"]}

    with pytest.raises(UnhashableError, match=r"closure variable 'lock'.*lock"):
        ds.map(locked)
    # in memory there is no cache file, so no key is needed: the same function runs
    assert Dataset.from_dict({"n": [1, 2]}).map(locked)["m"] == [1, 2]
    assert ds.map(locked, new_fingerprint="mine")["m"] == list(range(10))
