"""Decode speed: leanformers vs transformers on SmolLM2-135M-Instruct (the packaged GGUF), one run.

    .venv/bin/python benchmarks/decode.py [--new-tokens 128] [--batch 1 8] [--dtype float32] [--repeats 3]

Each library generates exactly --new-tokens tokens greedily (min_new_tokens pins the length) from
the same prompts; the best of --repeats runs is reported, as tokens/s, with the ratio
leanformers / transformers. Prefill is timed apart from decode.
"""

import argparse
import time

import torch
import transformers

from leanformers import AutoModelForCausalLM, AutoTokenizer
from leanformers.hub import bundled_model_path

PROMPTS = ["Hello, my name is", "The capital of France is", "def fibonacci(n):", "Once upon a time",
           "The quick brown fox", "Water boils at", "Here is a list of fruits:", "In 1969,"]


def timed_generate(model, inputs, new_tokens):
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return elapsed, out


def best_of(repeats, fn):
    return min(fn() for _ in range(repeats))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gguf = bundled_model_path("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(gguf)
    ours = AutoModelForCausalLM.from_pretrained(gguf, dtype=dtype)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype).eval()
    print(f"SmolLM2-135M {args.dtype}, {args.new_tokens} new tokens, greedy, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'batch':>5} {'leanformers tok/s':>18} {'transformers tok/s':>19} {'ratio':>6}")
    for batch in args.batch:
        prompts = (PROMPTS * batch)[:batch]
        inputs = dict(tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt"))
        results = {}
        for name, model in (("leanformers", ours), ("transformers", theirs)):
            timed_generate(model, inputs, 4)  # warm-up
            elapsed = best_of(args.repeats, lambda: timed_generate(model, inputs, args.new_tokens)[0])
            results[name] = batch * args.new_tokens / elapsed
        _, a = timed_generate(ours, inputs, 32)
        _, b = timed_generate(theirs, inputs, 32)
        same = "same tokens" if torch.equal(a, b) else "TOKENS DIFFER"
        print(f"{batch:>5} {results['leanformers']:>18.1f} {results['transformers']:>19.1f} "
              f"{results['leanformers'] / results['transformers']:>5.2f}x  ({same})")


if __name__ == "__main__":
    main()
