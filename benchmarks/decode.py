"""Generation speed and memory: leanformers vs transformers on SmolLM2-135M-Instruct (the
packaged GGUF), side by side in one run.

    .venv/bin/python benchmarks/decode.py [--dtype float32|bfloat16] [--quantized] [--repeats 3]
                                          [--memory | --profile | --kernels]

--quantized keeps leanformers' weights in the file's Q4_1/Q8_0 blocks (from_pretrained(dequantize=False),
the native kernels); transformers always dequantizes.

Prints, for each library and the ratio leanformers / transformers:
  - greedy decode tokens/s at batch 1 and batch 8 (--new-tokens, pinned with min_new_tokens),
    and whether both produced the same tokens;
  - sampling (top-p 0.9, temperature 0.8) at batch 8, 64 new tokens each, tokens/s in total;
  - prefill of a 512-token prompt (logits for the last position only), tokens/s;
  - with --memory: peak RSS of a fresh process that loads the model and generates 1,024 tokens
    (leanformers with its dequantized-GGUF cache already built);
  - with --profile: batch-1 greedy decode time per step inside the kernels and outside them
    (torch.profiler's self time of the matmul ops and of leanformers' native calls: the step through every
    layer, the output layer's matvec; the rest of the step's wall time is outside), each call's share, and
    the GB/s of layer weights the native step reads beside the machine's read bandwidth;
  - with --kernels: only the batch-1 matvec alone, GB/s of weights read by the native kernel
    (kernels/matvec.c) and by torch's F.linear (what transformers calls) on the same weight, SmolLM2's
    576 -> 1,536 (3.5 MB in fp32: it may sit in the CPU's last-level cache) and 576 -> 49,152 (113 MB),
    in fp32 and bf16, beside the machine's read bandwidth as a torch sum over 512 MB sees it.
The best of --repeats runs is reported; absolute numbers on a shared machine are noise, the
ratios measured in the same run are the figures to compare.
"""

import argparse
import contextlib
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
import transformers

from leanformers import AutoModelForCausalLM, AutoTokenizer
from leanformers.hub import bundled_model_path
from machine import cpu_description

PROMPTS = ["Hello, my name is", "The capital of France is", "def fibonacci(n):", "Once upon a time",
           "The quick brown fox", "Water boils at", "Here is a list of fruits:", "In 1969,"]


def load_models(dtype, quantized=False):
    gguf = bundled_model_path("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(gguf)
    ours = AutoModelForCausalLM.from_pretrained(gguf, dtype=dtype, dequantize=not quantized)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    return tokenizer, {"leanformers": ours, "transformers": theirs.eval()}


def best_time(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def generate(model, inputs, new_tokens, **kwargs):
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
    assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return out


def report(label, rates, note=""):
    ratio = rates["leanformers"] / rates["transformers"]
    print(f"{label:<34} {rates['leanformers']:>10.1f} {rates['transformers']:>13.1f} {ratio:>6.2f}x  {note}")


def measure_speed(args, dtype):
    tokenizer, models = load_models(dtype, args.quantized)
    for batch in (1, 8):
        inputs = dict(tokenizer((PROMPTS * batch)[:batch], padding=True, padding_side="left", return_tensors="pt"))
        rates, outputs = {}, {}
        for name, model in models.items():
            outputs[name] = generate(model, inputs, 32, do_sample=False)  # warm-up, and the tokens to compare
            elapsed = best_time(args.repeats, lambda: generate(model, inputs, args.new_tokens, do_sample=False))
            rates[name] = batch * args.new_tokens / elapsed
        same = "same tokens" if torch.equal(outputs["leanformers"], outputs["transformers"]) else "tokens differ"
        report(f"greedy decode, batch {batch} (tok/s)", rates, same)

    inputs = dict(tokenizer(PROMPTS, padding=True, padding_side="left", return_tensors="pt"))
    rates = {}
    for name, model in models.items():
        elapsed = best_time(args.repeats, lambda: generate(model, inputs, 64, do_sample=True, top_p=0.9,
                                                           temperature=0.8))
        rates[name] = len(PROMPTS) * 64 / elapsed
    report("sampling, batch 8 x 64 (tok/s)", rates)

    ids = torch.randint(100, 40000, (1, 512), generator=torch.Generator().manual_seed(0))
    rates = {}
    for name, model in models.items():
        with torch.inference_mode():
            model(ids[:, :32], logits_to_keep=1)
            rates[name] = 512 / best_time(args.repeats, lambda: model(ids, logits_to_keep=1))
    report("prefill, 512 tokens (tok/s)", rates)


MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mv", "aten::addmv",
              "mkldnn::_linear_pointwise", "aten::_mkl_linear"}
# leanformers' native calls (ctypes, no torch op), seen by the profiler as events of these names
NATIVE_CALLS = {"leanformers::decode_step": ("leanformers.models.native_decode", "decode_step"),
                "leanformers::dense_matvec": ("leanformers.models.layers", "dense_matvec"),
                "leanformers::quantized_matvec": ("leanformers.models.quantized", "quantized_matvec")}


@contextlib.contextmanager
def native_calls_recorded():
    import importlib

    originals = []
    for event, (module_name, name) in NATIVE_CALLS.items():
        module = importlib.import_module(module_name)
        native = getattr(module, name)

        def recorded(*args, native=native, event=event, **kwargs):
            with torch.profiler.record_function(event):
                return native(*args, **kwargs)

        originals.append((module, name, native))
        setattr(module, name, recorded)
    try:
        yield
    finally:
        for module, name, native in originals:
            setattr(module, name, native)


def read_bandwidth(repeats) -> float:
    """GB/s a torch sum reads over 512 MB: this machine's memory bandwidth as a plain reduction sees it."""
    memory = torch.ones(2**27)
    memory.sum()
    return memory.nbytes / best_time(repeats, memory.sum) / 1e9


def kernel_times_us(model, inputs, new_tokens) -> dict:
    """Self time (us) of each matmul op and native call over a generate() call, by name."""
    from torch.profiler import ProfilerActivity, profile

    with native_calls_recorded(), profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(model, inputs, new_tokens, do_sample=False)
    return {e.key: e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS | set(NATIVE_CALLS)}


def measure_profile(args, dtype):
    """Batch-1 greedy decode: ms per step inside the kernels (torch's matmuls, leanformers' native calls:
    the decode step through every layer in one call, the output layer's matvec) and outside them, per
    library; then GB/s of weights the native step reads, beside this machine's read bandwidth."""
    tokenizer, models = load_models(dtype, args.quantized)
    inputs = dict(tokenizer(PROMPTS[:1], return_tensors="pt"))
    steps = args.new_tokens
    print(f"{'batch-1 decode, ms per step':<34} {'total':>10} {'in kernels':>11} {'outside':>9}")
    per_call = {}
    for name, model in models.items():
        generate(model, inputs, 8, do_sample=False)
        # One-token runs subtract the prefill, so what is left is `steps` decode steps.
        wall = best_time(args.repeats, lambda: generate(model, inputs, steps + 1, do_sample=False))
        wall -= best_time(args.repeats, lambda: generate(model, inputs, 1, do_sample=False))
        times = kernel_times_us(model, inputs, steps + 1)
        for key, us in kernel_times_us(model, inputs, 1).items():
            times[key] -= us
        total, inside = wall / steps * 1e3, sum(times.values()) / steps / 1e3
        print(f"{name:<34} {total:>10.2f} {inside:>11.2f} {total - inside:>9.2f}")
        per_call[name] = {key: us / steps / 1e3 for key, us in times.items() if us > 0}
    for name, times in per_call.items():
        print(f"  {name}: " + ", ".join(f"{key} {ms:.2f} ms" for key, ms in sorted(times.items())))
    layers = models["leanformers"].model.layers
    step_ms = per_call["leanformers"].get("leanformers::decode_step")
    if step_ms:
        layer_bytes = sum(t.nbytes for t in (*layers.parameters(), *layers.buffers()))
        print(f"native decode step: {layer_bytes / 1e6:.1f} MB of layer weights in {step_ms:.2f} ms, "
              f"{layer_bytes / step_ms / 1e6:.1f} GB/s; read bandwidth (torch sum over 512 MB) "
              f"{read_bandwidth(args.repeats):.1f} GB/s")


KERNEL_SHAPES = {"576 -> 1,536": (1536, 576), "576 -> 49,152": (49152, 576)}  # (out, in) features


def measure_kernels(args):
    """Batch-1 matvec alone: GB/s of weights read, native kernel against F.linear, beside a plain sum's."""
    from leanformers.kernels import dense_matvec, kernels_available

    if not kernels_available():
        print("no native kernels here (LEANFORMERS_KERNELS=0, or no C compiler)")
        return
    print(f"{'read bandwidth, torch sum (GB/s)':<34} {read_bandwidth(args.repeats):>10.1f}")
    print(f"{'batch-1 matvec (GB/s of weights)':<34} {'native':>10} {'F.linear':>13}")
    for dtype in (torch.float32, torch.bfloat16):
        for name, shape in KERNEL_SHAPES.items():
            weight = torch.randn(shape).to(dtype)
            x = torch.randn(1, shape[1]).to(dtype)
            calls = max(1, 2**28 // weight.nbytes)  # ~256 MB of weights read per timing
            rates = {}
            for library, matvec in (("leanformers", lambda: dense_matvec([weight], [None], x)),
                                    ("transformers", lambda: F.linear(x, weight))):
                matvec()
                elapsed = best_time(args.repeats, lambda: [matvec() for _ in range(calls)])
                rates[library] = weight.nbytes * calls / elapsed / 1e9
            report(f"{name}, {str(dtype).removeprefix('torch.')}", rates)


def peak_memory_child(library, dtype_name, quantized):
    """Run in a fresh process: load one library's model, generate 1,024 tokens, print peak RSS (MB)."""
    dtype = getattr(torch, dtype_name)
    gguf = bundled_model_path("smollm2-135m-instruct")
    if library == "leanformers":
        model = AutoModelForCausalLM.from_pretrained(gguf, dtype=dtype, dequantize=not quantized)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    ids = torch.randint(100, 40000, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1008, min_new_tokens=1008,
                       do_sample=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure_memory(args):
    peaks = {}
    # leanformers runs twice: a first load of a GGUF file in a dtype dequantizes it into the cache.
    for library in ("leanformers", "leanformers", "transformers"):
        out = subprocess.run([sys.executable, __file__, "--peak-memory-child", library, "--dtype", args.dtype]
                             + (["--quantized"] if args.quantized else []),
                             capture_output=True, text=True, check=True)
        peaks[library] = float(out.stdout.strip().splitlines()[-1])
    ratio = peaks["leanformers"] / peaks["transformers"]
    print(f"{'peak RSS, 1,024-token generation (MB)':<38} {peaks['leanformers']:>6.0f} "
          f"{peaks['transformers']:>13.0f} {ratio:>6.2f}x  (lower is better)")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quantized", action="store_true", help="leanformers keeps the GGUF blocks (dequantize=False)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory (two fresh processes)")
    parser.add_argument("--profile", action="store_true", help="only: time per decode step inside/outside the kernels")
    parser.add_argument("--kernels", action="store_true", help="only: GB/s of the batch-1 matvec alone, native, torch")
    parser.add_argument("--peak-memory-child", choices=["leanformers", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_memory_child:
        return peak_memory_child(args.peak_memory_child, args.dtype, args.quantized)
    print(cpu_description())
    if args.kernels:
        return measure_kernels(args)
    print(f"SmolLM2-135M {args.dtype}" + (", leanformers kept quantized (Q4_1/Q8_0)" if args.quantized else ""))
    if args.profile:
        return measure_profile(args, getattr(torch, args.dtype))
    print(f"{'':<34} {'leanformers':>10} {'transformers':>13} {'ratio':>7}")
    if args.memory:  # first: a child's peak RSS starts from its parent's (Linux keeps it across exec)
        measure_memory(args)
    measure_speed(args, getattr(torch, args.dtype))


if __name__ == "__main__":
    main()
