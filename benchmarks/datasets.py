"""leanformers.data vs `datasets` on one JSONL: load, tokenize (batched map), filter, iterate as torch.

Each library runs in its own subprocess so peak memory (ru_maxrss) is its own. Prints time,
throughput and peak RSS per library and the ratios. `--stream-gb 2` also streams a JSONL of
that size through both and reports time and peak memory.

    .venv/bin/python benchmarks/datasets.py --rows 200000
    .venv/bin/python benchmarks/datasets.py --rows 0 --stream-gb 2
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

PIPELINE = r"""
import json, resource, sys, time
lib, path, cache = sys.argv[1], sys.argv[2], sys.argv[3]
from leanformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("all-minilm-l6-v2")
if lib == "leanformers":
    from leanformers import load_dataset
    kwargs = {"cache_dir": cache}
else:
    import datasets
    datasets.disable_progress_bars()
    from datasets import load_dataset
    kwargs = {"cache_dir": cache}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = {}
t0 = time.perf_counter()
ds = load_dataset("json", data_files=path, split="train", **kwargs)
times["load"] = time.perf_counter() - t0
t = time.perf_counter()
ds = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True, remove_columns=["text"])
times["map"] = time.perf_counter() - t
t = time.perf_counter()
ds = ds.filter(lambda b: [len(x) > 8 for x in b["input_ids"]], batched=True)
times["filter"] = time.perf_counter() - t
t = time.perf_counter()
ds = ds.with_format("torch")
tokens = 0
for row in ds:
    tokens += int(row["input_ids"].shape[0])
times["iterate"] = time.perf_counter() - t
times["total"] = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"times": times, "rows": len(ds), "tokens": tokens, "peak_mb": peak / 1024,
                  "growth_mb": (peak - base) / 1024}))
"""

STREAM = r"""
import json, resource, sys, time
lib, path = sys.argv[1], sys.argv[2]
if lib == "leanformers":
    from leanformers import load_dataset
else:
    import datasets
    from datasets import load_dataset
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
n = 0
for row in load_dataset("json", data_files=path, split="train", streaming=True):
    n += 1
elapsed = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": n, "seconds": elapsed, "peak_mb": peak / 1024, "growth_mb": (peak - base) / 1024}))
"""

WORDS = ("the of and to in is was for on that with as by at from his her an were are which this be has had "
         "model data token train learn text layer attention weight batch loss").split()


def write_corpus(path: Path, rows: int):
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(rows):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 60)))
            f.write(json.dumps({"id": i, "text": text, "label": i % 5}) + "\n")


def run(script: str, *args) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="rows in the JSONL for the pipeline (0: skip)")
    parser.add_argument("--stream-gb", type=float, default=0.0, help="also stream a JSONL of this many GB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.rows:
            corpus = tmp / "corpus.jsonl"
            write_corpus(corpus, args.rows)
            print(f"corpus: {args.rows} rows, {corpus.stat().st_size / 1e6:.1f} MB; load -> batched tokenize "
                  "(MiniLM, max_length 128) -> batched filter -> iterate as torch tensors")
            results = {lib: run(PIPELINE, lib, str(corpus), str(tmp / f"cache-{lib}"))
                       for lib in ("leanformers", "datasets")}
            print(f"{'':12}{'load':>8}{'map':>8}{'filter':>8}{'iterate':>9}{'total s':>9}{'rows/s':>10}"
                  f"{'peak MB':>9}{'growth MB':>10}")
            for lib, r in results.items():
                t = r["times"]
                print(f"{lib:12}{t['load']:8.2f}{t['map']:8.2f}{t['filter']:8.2f}{t['iterate']:9.2f}"
                      f"{t['total']:9.2f}{args.rows / t['total']:10.0f}{r['peak_mb']:9.0f}{r['growth_mb']:10.0f}")
            ours, theirs = results["leanformers"], results["datasets"]
            assert ours["rows"] == theirs["rows"] and ours["tokens"] == theirs["tokens"], (ours, theirs)
            print(f"throughput ratio (leanformers / datasets): {theirs['times']['total'] / ours['times']['total']:.2f}x"
                  f"   peak memory ratio: {ours['peak_mb'] / theirs['peak_mb']:.2f}x   "
                  f"(same {ours['rows']} rows, {ours['tokens']} tokens)")
        if args.stream_gb:
            big = tmp / "big.jsonl"
            line = json.dumps({"text": "x" * 1000}) + "\n"
            with open(big, "w") as f:
                block = line * 1000
                for _ in range(int(args.stream_gb * 1e9) // len(block)):
                    f.write(block)
            print(f"streaming {big.stat().st_size / 1e9:.2f} GB JSONL")
            for lib in ("leanformers", "datasets"):
                r = run(STREAM, lib, str(big))
                print(f"{lib:12} {r['rows']} rows in {r['seconds']:.1f} s ({r['rows'] / r['seconds']:.0f} rows/s), "
                      f"peak RSS {r['peak_mb']:.0f} MB (+{r['growth_mb']:.0f} MB)")


if __name__ == "__main__":
    main()
