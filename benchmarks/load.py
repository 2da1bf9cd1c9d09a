"""Cold start: seconds from a fresh Python process to the first generated token, SmolLM2-135M
from the packaged GGUF, leanformers (with its GGUF conversion cached) vs transformers, one run.

    .venv/bin/python benchmarks/load.py [--repeats 3]
"""

import argparse
import subprocess
import sys
import time

SCRIPTS = {
    "leanformers": """
from leanformers import AutoModelForCausalLM, AutoTokenizer
from leanformers.hub import bundled_model_path
path = bundled_model_path("smollm2-135m-instruct")
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path)
ids = tok("Hello", return_tensors="pt").input_ids
print(model.generate(ids, max_new_tokens=1, do_sample=False)[0, -1].item())
""",
    "transformers": """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from leanformers.hub import bundled_model_path
path = bundled_model_path("smollm2-135m-instruct")
tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
ids = tok("Hello", return_tensors="pt").input_ids
print(model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)[0, -1].item())
""",
}


def cold_start(script: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stdout.strip()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cold_start(SCRIPTS["leanformers"])  # fills the GGUF conversion cache
    best, tokens = {}, {}
    for name, script in SCRIPTS.items():
        runs = [cold_start(script) for _ in range(args.repeats)]
        best[name] = min(t for t, _ in runs)
        tokens[name] = runs[0][1]
    print("cold process -> first token, SmolLM2-135M GGUF, fp32 (best of %d)" % args.repeats)
    for name in SCRIPTS:
        print(f"  {name:<13} {best[name]:6.2f} s   first token id {tokens[name]}")
    print(f"  ratio transformers / leanformers: {best['transformers'] / best['leanformers']:.1f}x faster start")


if __name__ == "__main__":
    main()
