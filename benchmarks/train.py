"""Training speed and peak memory: leanformers.Trainer vs transformers.Trainer on SmolLM2-135M, side by side.

    .venv/bin/python benchmarks/train.py [--steps 5] [--repeats 1] [--lora]

Both Trainers train the same fp32 weights (the packaged GGUF dequantized once and saved as safetensors) on
rows of 256 random token ids, batch 4, labels = input_ids, with transformers' defaults (fused AdamW,
linear schedule, clipping at 1.0). Each run is a fresh process, so its peak RSS is its own; tokens/s
counts the steps after the first. With --lora both sides train r=8 adapters on q_proj and v_proj
(leanformers' get_peft_model vs peft's). Absolute figures on a shared machine are noise: compare the ratios.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BATCH, LENGTH = 4, 256


def cpu_name() -> str:
    """The CPU's model name and the vector flags that decide its matmul speed (Linux; else the platform's)."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    name = next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), platform.machine())
    flags = next((l.split(":", 1)[1].split() for l in info if l.startswith("flags")), [])
    return f"{name} ({' '.join(f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16') if f in flags)})"


def train_once(library: str, weights: str, steps: int, lora: bool):
    """One run in this process: prints tokens/s of the steps after the first."""
    here = Path(__file__).resolve().parent  # benchmarks/datasets.py would stand in for the datasets package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    import transformers

    import leanformers

    lib = leanformers if library == "leanformers" else transformers
    model = lib.AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    if lora:
        settings = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        if library == "leanformers":
            model = leanformers.get_peft_model(model, leanformers.LoraConfig(**settings))
        else:
            import peft

            model = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM", **settings))
    ids = torch.randint(100, 40000, ((steps + 1) * BATCH, LENGTH), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row} for row in ids]  # a list is a map-style dataset to both
    times = []

    class StepTimes(lib.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    args = lib.TrainingArguments(tempfile.mkdtemp(), per_device_train_batch_size=BATCH, max_steps=steps + 1,
                                 save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=10_000,
                                 train_sampling_strategy="sequential")
    lib.Trainer(model, args, train_dataset=dataset, data_collator=lib.default_data_collator,
                callbacks=[StepTimes()]).train()
    print(f"{steps * BATCH * LENGTH / (times[-1] - times[0]):.2f}")


def measured(library: str, weights: str, steps: int, lora: bool) -> tuple[float, float]:
    """(tokens/s, peak RSS in MB) of one run in a fresh process (wait4 gives that process's own peak)."""
    command = [sys.executable, __file__, "--child", library, "--weights", weights, "--steps", str(steps)]
    child = subprocess.Popen(command + (["--lora"] if lora else []), stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise RuntimeError(f"the {library} run failed (status {status})")
    return float(output.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--child", choices=["leanformers", "transformers"])
    parser.add_argument("--weights")
    args = parser.parse_args()
    if args.child:
        return train_once(args.child, args.weights, args.steps, args.lora)
    from leanformers import AutoModelForCausalLM
    from leanformers.hub import DEFAULT_CHAT_MODEL

    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    weights = tempfile.mkdtemp()
    AutoModelForCausalLM.from_pretrained(DEFAULT_CHAT_MODEL).save_pretrained(weights)
    speeds = {"leanformers": [], "transformers": []}
    peaks = {}
    for repeat in range(args.repeats):
        order = ("leanformers", "transformers") if repeat % 2 == 0 else ("transformers", "leanformers")
        for library in order:
            speed, peak = measured(library, weights, args.steps, args.lora)
            speeds[library].append(speed)
            peaks[library] = peak
    best = {library: max(values) for library, values in speeds.items()}
    kind = "LoRA r=8 q_proj,v_proj" if args.lora else "full fine-tuning"
    print(f"SmolLM2-135M {kind}, fp32, batch {BATCH} x {LENGTH} tokens, {args.steps} steps after 1 warm-up")
    print(f"tokens/s   leanformers {best['leanformers']:8.1f}   transformers {best['transformers']:8.1f}   "
          f"ratio {best['leanformers'] / best['transformers']:.2f}x")
    print(f"peak RSS   leanformers {peaks['leanformers']:6.0f} MB   transformers {peaks['transformers']:6.0f} MB   "
          f"ratio {peaks['leanformers'] / peaks['transformers']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
