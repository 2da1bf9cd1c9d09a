"""Cold start: seconds from a fresh Python process to the first generated token, a bundled GGUF model,
leanformers vs transformers, one run. leanformers is timed twice: its first load (dequantizing the file
into an empty cache) and a later one (the dequantized cache memory-mapped).

    .venv/bin/python benchmarks/load.py [--model smollm2-135m-instruct | gemma3-270m] [--repeats 3]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

from machine import cpu_description

SCRIPTS = {
    "leanformers": """
from leanformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({model!r})
model = AutoModelForCausalLM.from_pretrained({model!r})
ids = tok("Hello", return_tensors="pt").input_ids
print(model.generate(ids, max_new_tokens=1, do_sample=False)[0, -1].item())
""",
    "transformers": """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from leanformers.hub import bundled_model_path
path = bundled_model_path({model!r})
tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
ids = tok("Hello", return_tensors="pt").input_ids
print(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)[0, -1].item())
""",
}


def cold_start(script: str, cache: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env={**os.environ, "LEANFORMERS_CACHE": cache})
    return time.perf_counter() - start, result.stdout.strip()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct", choices=["smollm2-135m-instruct", "gemma3-270m"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scripts = {name: script.format(model=args.model) for name, script in SCRIPTS.items()}
    print(cpu_description())
    with tempfile.TemporaryDirectory() as cache:
        first, _ = cold_start(scripts["leanformers"], cache)  # fills the empty GGUF conversion cache
        best, tokens = {}, {}
        for name, script in scripts.items():
            runs = [cold_start(script, cache) for _ in range(args.repeats)]
            best[name] = min(t for t, _ in runs)
            tokens[name] = runs[0][1]
    print(f"cold process -> first token, {args.model} GGUF, fp32 (best of {args.repeats})")
    print(f"  leanformers, first load (dequantizing) {first:6.2f} s")
    for name in scripts:
        print(f"  {name:<13} {best[name]:6.2f} s   first token id {tokens[name]}")
    print(f"  ratio transformers / leanformers: {best['transformers'] / best['leanformers']:.1f}x faster start "
          f"({best['transformers'] / first:.1f}x on the first load)")


if __name__ == "__main__":
    main()
