"""Quantized decode against llama.cpp on the same file: SmolLM2-135M-Instruct Q4_1 (the packaged GGUF),
leanformers keeping the blocks (from_pretrained(dequantize=False)) vs llama-cpp-python, one run, the
same thread count.

    .venv/bin/pip install llama-cpp-python   # benchmark-only: it compiles llama.cpp for minutes
    .venv/bin/python benchmarks/quantized_vs_llama_cpp.py [--new-tokens 128] [--repeats 3]

Prints batch-1 greedy decode tokens/s and the time to first token of a 512-token prompt, each library's
and the ratio.
"""

import argparse

import torch

from leanformers import AutoModelForCausalLM
from leanformers.hub import bundled_model_path
from decode import best_time
from machine import cpu_description


def measure(name, prefill, decode, short, prompt, args, rates, firsts):
    """Decode rate (the new tokens' time, less a prefill of the same short prompt) and first-token time."""
    decode()  # warm-up
    rates[name] = args.new_tokens / (best_time(args.repeats, decode) - best_time(args.repeats, lambda: prefill(short)))
    firsts[name] = best_time(args.repeats, lambda: prefill(prompt))


def main():
    from llama_cpp import Llama

    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = bundled_model_path("smollm2-135m-instruct")
    threads = torch.get_num_threads()
    print(cpu_description())
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
