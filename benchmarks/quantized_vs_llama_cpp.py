"""Quantized decode against llama.cpp on the same file: SmolLM2-135M-Instruct Q4_1 (the packaged GGUF),
leanformers keeping the blocks (from_pretrained(dequantize=False)) vs llama-cpp-python, one run, the
same thread count.

    .venv/bin/pip install llama-cpp-python   # benchmark-only: it compiles llama.cpp for minutes
    .venv/bin/python benchmarks/quantized_vs_llama_cpp.py [--new-tokens 128] [--repeats 3] [--memory]

Prints batch-1 greedy decode tokens/s and the time to first token of a 512-token prompt, each library's
and the ratio. --memory first prints the resident memory each library's model adds to its process during a
512-token generation (fresh processes; the resident set sampled every 2 ms, less the process's after its
imports), against the issue's limit for leanformers: 1.5 x the file's size + the KV cache.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

import torch

from leanformers import AutoConfig, AutoModelForCausalLM
from leanformers.hub import bundled_model_path
from decode import best_time
from machine import cpu_description


def measure(name, prefill, decode, short, prompt, args, rates, firsts):
    """Decode rate (the new tokens' time, less a prefill of the same short prompt) and first-token time."""
    decode()  # warm-up
    rates[name] = args.new_tokens / (best_time(args.repeats, decode) - best_time(args.repeats, lambda: prefill(short)))
    firsts[name] = best_time(args.repeats, lambda: prefill(prompt))


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(library: str, path):
    """Run in a fresh process: the most resident memory a 512-token generation (16-token prompt) adds to the
    process after its imports, in MB."""
    from llama_cpp import Llama

    before, peak, done = resident_mb(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    prompt = torch.randint(100, 40000, (1, 16), generator=torch.Generator().manual_seed(0))
    if library == "leanformers":
        model = AutoModelForCausalLM.from_pretrained(path, dequantize=False)
        with torch.inference_mode():
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=496, min_new_tokens=496,
                           do_sample=False)
    else:
        model = Llama(model_path=str(path), n_ctx=512, n_threads=torch.get_num_threads(), verbose=False)
        for count, _ in enumerate(model.generate(prompt[0].tolist(), top_k=1, temp=0.0), start=17):
            if count == 512:
                break
    done.set()
    sampler.join()
    print(max(peak[0], resident_mb()) - before)


def measure_memory(path):
    added = {}
    for library in ("leanformers", "llama.cpp"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", library], capture_output=True, text=True,
                             check=True)
        added[library] = float(out.stdout.strip().splitlines()[-1])
    config = AutoConfig.from_pretrained(path)
    head_dim = config.hidden_size // config.num_attention_heads
    kv_cache = 2 * config.num_hidden_layers * 512 * config.num_key_value_heads * head_dim * 4 / 2**20  # fp32 keys, values
    limit = 1.5 * path.stat().st_size / 2**20 + kv_cache
    print(f"{'memory a 512-token generation adds (MB)':<40} {added['leanformers']:>11.0f} {added['llama.cpp']:>10.0f} "
          f"{added['leanformers'] / added['llama.cpp']:>6.2f}x (lower is better); leanformers' limit "
          f"1.5 x {path.stat().st_size / 2**20:.1f} MB file + {kv_cache:.1f} MB KV cache = {limit:.0f} MB")


def main():
    from llama_cpp import Llama

    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also the memory each model adds (fresh processes)")
    parser.add_argument("--memory-child", choices=["leanformers", "llama.cpp"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    path = bundled_model_path("smollm2-135m-instruct")
    if args.memory_child:
        return memory_child(args.memory_child, path)
    threads = torch.get_num_threads()
    print(cpu_description())
    if args.memory:
        measure_memory(path)
    prompt = [1] + torch.randint(100, 40000, (511,), generator=torch.Generator().manual_seed(0)).tolist()
    short = prompt[:8]
    rates, firsts = {}, {}
    # One library at a time: llama.cpp's threads keep spinning between its calls and take the cores.
    ours = AutoModelForCausalLM.from_pretrained(path, dequantize=False)

    def ours_prefill(tokens):
        with torch.inference_mode():
            ours(torch.tensor([tokens]), logits_to_keep=1)

    def ours_decode():
        with torch.inference_mode():
            ours.generate(torch.tensor([short]), max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                          do_sample=False)

    measure("leanformers", ours_prefill, ours_decode, short, prompt, args, rates, firsts)
    theirs = Llama(model_path=str(path), n_ctx=1024, n_threads=threads, n_batch=512, verbose=False)

    def theirs_prefill(tokens):
        theirs.reset()
        theirs.eval(tokens)

    def theirs_decode():
        theirs.reset()
        for count, _ in enumerate(theirs.generate(short, top_k=1, temp=0.0, reset=True), start=1):
            if count == args.new_tokens:
                break

    measure("llama.cpp", theirs_prefill, theirs_decode, short, prompt, args, rates, firsts)
    print(f"SmolLM2-135M Q4_1, {threads} threads{'':>12} {'leanformers':>11} {'llama.cpp':>10} {'ratio':>7}")
    print(f"{'batch-1 greedy decode (tok/s)':<40} {rates['leanformers']:>11.1f} {rates['llama.cpp']:>10.1f} "
          f"{rates['leanformers'] / rates['llama.cpp']:>6.2f}x")
    print(f"{'first token of 512-token prompt (ms)':<40} {firsts['leanformers'] * 1e3:>11.0f} "
          f"{firsts['llama.cpp'] * 1e3:>10.0f} {firsts['llama.cpp'] / firsts['leanformers']:>6.2f}x (higher: faster)")


if __name__ == "__main__":
    main()
