"""Training speed and memory: leanformers.Trainer vs transformers.Trainer on SmolLM2-135M-Instruct, side by
side in one run; full fine-tuning, and LoRA (leanformers' get_peft_model vs peft's over transformers).

    .venv/bin/python benchmarks/train.py [--lora] [--repeats 3] [--steps 5] [--lora-targets q_proj,v_proj] [--no-memory]
                                         [--device cuda] [--random-weights]

Both libraries train the same weights (the packaged GGUF, dequantized by leanformers and saved as
safetensors, which each side loads) on 4 rows of 256 random token ids a step, labels = input_ids, in fp32,
through their Trainer with the same arguments, transformers' defaults spelled out: torch's fused AdamW
(optim adamw_torch_fused), learning rate 5e-5 on the linear schedule, no weight decay, gradients clipped to
norm 1.0. leanformers' Trainer asks the model for the loss alone (skip_logits=True: the loss over the
vocabulary a block of rows at a time, no logits kept); transformers' does so only under use_liger_kernel.

Prints, for full fine-tuning and for LoRA (r=8, alpha 16, on --lora-targets; --lora: LoRA only), against
transformers:
  - peak RSS of a fresh process that loads the model and trains 1 + --steps steps (lower is better);
  - tokens/s over --steps steps after one warm-up step, each side's median over --repeats runs that
    alternate between the sides (the order reversed every other repeat), and each run's figures
    (leanformers / transformers).
--device cuda trains on the GPU (peak memory is then torch.cuda.max_memory_allocated); --random-weights
trains SmolLM2-135M's shapes from a seeded random init, where the packaged GGUF is not installed (speed
does not depend on the weights' values). Absolute numbers on a shared machine are noise; the ratios measured in the same run are the figures to compare.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import peft
import torch
import transformers

import leanformers
from leanformers.hub import DEFAULT_CHAT_MODEL, bundled_model_path
from machine import cpu_description

BATCH, LENGTH = 4, 256
LEARNING_RATE, MAX_GRAD_NORM = 5e-5, 1.0
SIDES = ("leanformers", "transformers")


def training_rows(steps: int) -> list:
    """One warm-up step and `steps` more of random token ids, as dataset rows."""
    ids = torch.randint(100, 40000, ((steps + 1) * BATCH, LENGTH), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def load_model(library: str, weights: str, lora_targets):
    """The model to train: the full model, or with LoRA adapters on lora_targets (r=8, alpha 16)."""
    lora = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=lora_targets, task_type="CAUSAL_LM")
    if library == "leanformers":
        model = leanformers.AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
        return leanformers.get_peft_model(model, leanformers.LoraConfig(**lora)) if lora_targets else model
    model = transformers.AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    return peft.get_peft_model(model, peft.LoraConfig(**lora)) if lora_targets else model


def train(library: str, model, rows, on_step_end, device: str):
    """One step per BATCH rows through the library's Trainer; on_step_end() after each."""
    lib = leanformers if library == "leanformers" else transformers

    class StepEnds(lib.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            on_step_end()

    with tempfile.TemporaryDirectory() as output_dir:
        args = lib.TrainingArguments(
            output_dir=output_dir, max_steps=len(rows) // BATCH, per_device_train_batch_size=BATCH,
            learning_rate=LEARNING_RATE, lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=MAX_GRAD_NORM,
            optim="adamw_torch_fused", report_to="none", save_strategy="no", logging_steps=10**6,
            disable_tqdm=True, use_cpu=device == "cpu", dataloader_num_workers=0)
        trainer = lib.Trainer(model=model, args=args, train_dataset=rows,
                              data_collator=lib.default_data_collator, callbacks=[StepEnds()])
        if library == "transformers":
            trainer.remove_callback(transformers.PrinterCallback)  # its end-of-training metrics would cut into the table
        trainer.train()


def tokens_per_second(library: str, model, rows, device: str) -> float:
    """Tokens/s of the steps after the first (the warm-up), timed from one step's end to the next's."""
    ends = []

    def step_end():
        if device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())

    train(library, model, rows, step_end, device)
    return (len(ends) - 1) * BATCH * LENGTH / (ends[-1] - ends[0])


def report(label, values, note=""):
    ratio = values["leanformers"] / values["transformers"]
    print(f"{label:<50} {values['leanformers']:>11.1f} {values['transformers']:>13.1f} {ratio:>6.2f}x  {note}")


def measure_speed(args, weights, label, lora_targets):
    rows = training_rows(args.steps)
    models = {side: load_model(side, weights, lora_targets) for side in SIDES}
    rates = {side: [] for side in SIDES}
    for repeat in range(args.repeats):
        for side in SIDES[:: 1 if repeat % 2 == 0 else -1]:
            rates[side].append(tokens_per_second(side, models[side], rows, args.device))
    runs = " ".join("/".join(f"{rates[side][i]:.0f}" for side in SIDES) for i in range(args.repeats))
    report(f"{label} (tok/s)", {side: statistics.median(r) for side, r in rates.items()}, f"runs {runs}")


def peak_memory_child(args):
    """Run in a fresh process: load one side's model, train 1 + --steps steps, print peak RSS (MB), or on
    the GPU the peak of the memory torch allocated there."""
    model = load_model(args.child, args.weights, args.lora_child)
    train(args.child, model, training_rows(args.steps), lambda: None, args.device)
    print(torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
          else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure_memory(args, weights, label, lora_targets):
    peaks = {}
    for side in SIDES:
        command = [sys.executable, __file__, "--child", side, "--weights", weights, "--steps", str(args.steps),
                   "--device", args.device]
        if lora_targets:
            command += ["--lora-child", ",".join(lora_targets)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        peaks[side] = float(out.stdout.strip().splitlines()[-1])
    report(f"{label} peak {'GPU memory' if args.device == 'cuda' else 'RSS'} (MB)", peaks, "(lower is better)")


# SmolLM2-135M-Instruct's config.json, for --random-weights.
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                    rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def save_weights(folder, random_weights: bool):
    """Run in a fresh process, so that loading the GGUF does not raise the parent's peak RSS, which the
    memory children would inherit (Linux keeps a process's peak RSS across exec)."""
    if random_weights:
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2_135M))
    else:
        model = leanformers.AutoModelForCausalLM.from_pretrained(bundled_model_path(DEFAULT_CHAT_MODEL))
    model.save_pretrained(folder)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lora", action="store_true", help="only the LoRA runs")
    parser.add_argument("--lora-targets", default="q_proj,v_proj", help="comma-separated linear layer names")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--random-weights", action="store_true",
                        help="SmolLM2-135M's shapes, seeded random weights (no packaged GGUF needed)")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--lora-child", type=lambda s: s.split(","), help=argparse.SUPPRESS)
    parser.add_argument("--save-weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # This script's folder holds a datasets.py, which would shadow the datasets package the Trainer imports.
    sys.path.remove(os.path.dirname(os.path.abspath(__file__)))
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    if args.save_weights:
        return save_weights(args.save_weights, args.random_weights)
    if args.child:
        return peak_memory_child(args)
    print(cpu_description())
    if args.device == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"SmolLM2-135M{' (random weights)' * args.random_weights} fp32, batch {BATCH} x {LENGTH} tokens, 1 warm-up + {args.steps} steps; peft {peft.__version__}")
    modes = [(f"LoRA r=8 {args.lora_targets}", args.lora_targets.split(","))]
    if not args.lora:
        modes.insert(0, ("full fine-tuning", None))
    with tempfile.TemporaryDirectory() as weights:
        subprocess.run([sys.executable, __file__, "--save-weights", weights]
                       + ["--random-weights"] * args.random_weights, check=True)
        print(f"{'':<50} {'leanformers':>11} {'transformers':>13} {'ratio':>7}")
        if not args.no_memory:  # first: a child's peak RSS starts from its parent's
            for label, lora_targets in modes:
                measure_memory(args, weights, label, lora_targets)
        for label, lora_targets in modes:
            measure_speed(args, weights, label, lora_targets)


if __name__ == "__main__":
    main()
