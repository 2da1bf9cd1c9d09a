"""Serving throughput: concurrent clients against `leanformers serve` and `transformers serve
--continuous-batching` on SmolLM2-135M-Instruct, and the same requests one at a time against
leanformers serve, in one run.

    .venv/bin/python benchmarks/serve.py [--clients 16] [--new-tokens 64]

Both servers load the same files: the bundled GGUF written once as a Hugging Face folder by
`leanformers convert` (transformers serve cannot take that GGUF file itself: the config it derives
has no `architectures`, and transformers cannot save a GGUF-loaded model). Each client streams one
greedy completion of its own prompt (max_tokens=--new-tokens) with the openai client; a warm-up
round runs first on each server. transformers serve bounds its batch by tokens, so it runs all the
clients at once; leanformers serve gets --max-batch equal to the clients for the same, and runs
again with its default --max-batch 8 (two waves of 8). Prints total generated tokens/s, p50/p95
time to first token and p50/p95 latency per request, and the ratios; absolute numbers on a shared
machine are noise (run it when the machine is otherwise idle).
"""

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from leanformers.hub import bundled_model_path
from machine import cpu_description

PROMPTS = ["Hello, my name is", "The capital of France is", "def fibonacci(n):", "Once upon a time",
           "The quick brown fox", "Water boils at", "Here is a list of fruits:", "In 1969,",
           "The best way to learn a language is", "My favourite recipe starts with", "import numpy as np\n",
           "Dear customer, we are writing to", "The three laws of motion are", "Chapter 1\n\nIt was a dark",
           "Q: What is the largest planet?\nA:", "Ten facts about cats:\n1."]


def wait_until_healthy(port: int, process, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"no server answered on port {port} within {timeout} s")


def start_server(command: list[str], port: int):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wait_until_healthy(port, process)
    return process


def stream_one(client, model: str, prompt: str, new_tokens: int, start: float) -> tuple[float, float, int]:
    """(time to first token, latency, generated tokens) of one streamed greedy completion."""
    first = None
    tokens = 0
    stream = client.completions.create(model=model, prompt=prompt, max_tokens=new_tokens, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].text:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return first, time.perf_counter() - start, tokens


def run_clients(port: int, model: str, prompts: list[str], new_tokens: int, concurrent: bool) -> dict:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    start = time.perf_counter()
    if concurrent:
        barrier = threading.Barrier(len(prompts))

        def one(prompt):
            barrier.wait()
            return stream_one(client, model, prompt, new_tokens, time.perf_counter())

        with ThreadPoolExecutor(len(prompts)) as pool:
            results = list(pool.map(one, prompts))
    else:
        results = [stream_one(client, model, prompt, new_tokens, time.perf_counter()) for prompt in prompts]
    elapsed = time.perf_counter() - start
    ttft, latency, tokens = zip(*results, strict=True)
    return {"tokens/s": sum(tokens) / elapsed, "tokens": sum(tokens), "ttft": ttft, "latency": latency}


def percentile(values, q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def measure(name: str, command: list[str], port: int, model: str, args, one_at_a_time: str | None = None) -> dict:
    """The clients at once on the server `command` starts; also one at a time (the row named `one_at_a_time`)."""
    process = start_server(command, port)
    try:
        run_clients(port, model, PROMPTS[: args.clients], 8, concurrent=True)  # warm-up
        results = {name: run_clients(port, model, PROMPTS[: args.clients], args.new_tokens, concurrent=True)}
        if one_at_a_time:
            results[one_at_a_time] = run_clients(port, model, PROMPTS[: args.clients], args.new_tokens,
                                                 concurrent=False)
    finally:
        process.terminate()
        process.wait(60)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, choices=range(1, len(PROMPTS) + 1), metavar="N")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    print(cpu_description())
    with tempfile.TemporaryDirectory() as folder:
        gguf = bundled_model_path("smollm2-135m-instruct")
        subprocess.run([sys.executable, "-m", "leanformers.cli", "convert", str(gguf), folder], check=True,
                       stdout=subprocess.DEVNULL)

        def ours(max_batch):
            return [sys.executable, "-m", "leanformers.cli", "serve", "--model", folder, "--port", str(args.port),
                    "--max-batch", str(max_batch), "--embedding-model", "none"]

        theirs = [sys.executable, "-m", "transformers.cli.transformers", "serve", "--continuous-batching",
                  "--port", str(args.port), "--host", "127.0.0.1", folder]
        main = f"leanformers serve --max-batch {args.clients}"
        alone = "leanformers serve, one at a time"
        results = measure(main, ours(args.clients), args.port, folder, args, one_at_a_time=alone)
        results |= measure("leanformers serve --max-batch 8", ours(8), args.port, folder, args)
        results |= measure("transformers serve --continuous-batching", theirs, args.port, folder, args)
    print(f"{args.clients} clients, {args.new_tokens} new tokens each (greedy, streamed)")
    print(f"{'':<42} {'tokens/s':>9} {'tokens':>7} {'TTFT p50':>9} {'p95':>7} {'latency p50':>12} {'p95':>7}")
    for name, r in results.items():
        print(f"{name:<42} {r['tokens/s']:>9.1f} {r['tokens']:>7} {percentile(r['ttft'], 50):>8.2f}s "
              f"{percentile(r['ttft'], 95):>6.2f}s {percentile(r['latency'], 50):>11.2f}s "
              f"{percentile(r['latency'], 95):>6.2f}s")
    transformers_rate = results["transformers serve --continuous-batching"]["tokens/s"]
    alone_rate = results[alone]["tokens/s"]
    for name in (main, "leanformers serve --max-batch 8"):
        rate = results[name]["tokens/s"]
        print(f"{name}: {rate / transformers_rate:.2f}x transformers serve --continuous-batching (target 1.5x), "
              f"{rate / alone_rate:.2f}x one at a time (target 4x), in tokens/s")


if __name__ == "__main__":
    main()
