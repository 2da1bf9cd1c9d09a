"""A small training run in its own process, for the tests that kill, stop, resume or distribute one.

    python tests/trainer_run.py MODEL_DIR OUT_DIR [--batch-size 2] [--resume] [--step-delay S]

Trains a tiny causal LM on 40 variable-length rows of random ids (15 steps of 2 micro-batches,
shuffled, a checkpoint every step), then writes OUT_DIR/history.json (the run's log history) and
OUT_DIR/final/ (the trained model). --step-delay sleeps after each step, so that a test can send a
signal while the run is between checkpoints.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from leanformers import AutoModelForCausalLM, Dataset, Trainer, TrainerCallback, TrainingArguments


def rows(count: int = 40, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 12, (count,), generator=generator).tolist()
    return [torch.randint(3, 128, (n,), generator=generator).tolist() for n in lengths]


def pad_collate(features: list) -> dict:
    """Right-pad ids with 0, the mask with 0 and labels with -100 (neither library's collator, so both
    sides of a comparison get the same batches)."""
    width = max(len(f["input_ids"]) for f in features)
    fill = [width - len(f["input_ids"]) for f in features]
    return {"input_ids": torch.tensor([list(f["input_ids"]) + [0] * n for f, n in zip(features, fill, strict=True)]),
            "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * n
                                            for f, n in zip(features, fill, strict=True)]),
            "labels": torch.tensor([list(f["labels"]) + [-100] * n for f, n in zip(features, fill, strict=True)])}


class Sleep(TrainerCallback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.seconds)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--step-delay", type=float, default=0.0)
    args = parser.parse_args()
    data = rows()
    model = AutoModelForCausalLM.from_pretrained(args.model_dir)
    training_args = TrainingArguments(args.out_dir, per_device_train_batch_size=args.batch_size,
                                      gradient_accumulation_steps=2, max_steps=15, learning_rate=1e-3,
                                      warmup_steps=2, weight_decay=0.01, logging_steps=1, save_steps=1, seed=0,
                                      report_to="none", disable_tqdm=True)
    trainer = Trainer(model, training_args, train_dataset=Dataset.from_dict({"input_ids": data, "labels": data}),
                      data_collator=pad_collate, callbacks=[Sleep(args.step_delay)] if args.step_delay else None)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    if training_args.should_save:
        trainer.save_model(Path(args.out_dir) / "final")
        history = [e for e in trainer.state.log_history if "loss" in e]
        (Path(args.out_dir) / "history.json").write_text(json.dumps(history))
    return 0


if __name__ == "__main__":
    sys.exit(main())
