"""Batch-1 decode when the cores are shared: leanformers vs transformers on SmolLM2-135M-Instruct, quiet and
with one other process spinning on a core (this script starts it, and ends it however the run ends).

    .venv/bin/python benchmarks/shared_cores.py [--new-tokens 64] [--repeats 3] [--dtype float32|bfloat16]
                                                [--quantized] [--busy 1]

A kernel split across every core waits at each call for its slowest thread; when another process holds a
core, that thread is the one the scheduler has set aside, and each of the ~200 calls of a step waits for
it. Prints greedy decode tokens/s (best of --repeats) for each library, quiet and busy, and the ratios
leanformers / transformers. --quantized keeps leanformers' weights in the file's blocks (transformers
always dequantizes); --busy sets how many spinning processes run beside it.
"""

import argparse
import subprocess
import sys
import time

import torch

from decode import PROMPTS, best_time, generate, load_models
from machine import cpu_description


def decode_rates(models, inputs, args) -> dict:
    rates = {}
    for name, model in models.items():
        generate(model, inputs, 8, do_sample=False)  # warm-up
        rates[name] = args.new_tokens / best_time(args.repeats, lambda: generate(model, inputs, args.new_tokens,
                                                                                 do_sample=False))
    return rates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--quantized", action="store_true", help="leanformers keeps the GGUF blocks (dequantize=False)")
    parser.add_argument("--busy", type=int, default=1, help="spinning processes beside the benchmark")
    args = parser.parse_args()
    print(cpu_description())
    tokenizer, models = load_models(getattr(torch, args.dtype), args.quantized)
    inputs = dict(tokenizer(PROMPTS[:1], return_tensors="pt"))
    rates = {"quiet": decode_rates(models, inputs, args)}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        time.sleep(0.5)
        rates["busy"] = decode_rates(models, inputs, args)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    kind = "Q4_1 kept quantized" if args.quantized else args.dtype
    print(f"SmolLM2-135M batch-1 greedy decode, leanformers {kind}, {torch.get_num_threads()} threads, "
          f"{args.busy} busy process(es)")
    print(f"{'tokens/s':<28} {'leanformers':>11} {'transformers':>13} {'ratio':>7}")
    for condition, rate in rates.items():
        print(f"{condition:<28} {rate['leanformers']:>11.1f} {rate['transformers']:>13.1f} "
              f"{rate['leanformers'] / rate['transformers']:>6.2f}x")


if __name__ == "__main__":
    main()
