"""The same training in transformers' Trainer (the oracle) and in ours, for the tests that compare the
two: test_trainer.py, and test_devices.py on each device. transformers gets the rows as a list of dicts
(its Trainer takes any map-style dataset), so the comparison needs no `datasets` package: the GPU
machines the device tests run on have none."""

import transformers

from leanformers import AutoModelForCausalLM, Dataset, Trainer, TrainingArguments

from trainer_run import pad_collate, rows

QUIET = dict(report_to="none", disable_tqdm=True)
PARITY = dict(per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=20, learning_rate=1e-3,
              warmup_steps=3, weight_decay=0.01, logging_steps=1, save_strategy="no",
              train_sampling_strategy="sequential", **QUIET)


def lm_data(count=40):
    data = rows(count)
    return {"input_ids": data, "labels": data}


def as_records(data: dict) -> list[dict]:
    """Columns -> one dict per row."""
    return [dict(zip(data, row, strict=True)) for row in zip(*data.values(), strict=True)]


def train_losses(trainer) -> list[dict]:
    return [e for e in trainer.state.log_history if "loss" in e]


def run_both(folder, args: dict, data: dict, model_kwargs=None, **trainer_kwargs):
    """The same training in transformers and in leanformers; returns the two trainers."""
    model_kwargs = model_kwargs or {}
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(folder, **model_kwargs)
    # transformers finds a causal LM's loss by class name, and GPT2LMHeadModel's does not end in ForCausalLM:
    # without this its Trainer counts each row's first label as a scored token and under-scales the loss.
    ref_model.loss_type = "ForCausalLM"
    ref = transformers.Trainer(ref_model,
                               transformers.TrainingArguments(str(folder / "ref-out"), **args),
                               train_dataset=as_records(data), data_collator=pad_collate, **trainer_kwargs)
    ref.train()
    ours = Trainer(AutoModelForCausalLM.from_pretrained(folder, **model_kwargs),
                   TrainingArguments(str(folder / "our-out"), **args), train_dataset=Dataset.from_dict(data),
                   data_collator=pad_collate, **trainer_kwargs)
    ours.train()
    return ref, ours
