"""Trainer and TrainingArguments against transformers.Trainer (the oracle), and the runs that are killed,
stopped, resumed and distributed in real subprocesses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers

import leanformers
from leanformers import (AutoModelForCausalLM, Dataset, EarlyStoppingCallback, Trainer, TrainerCallback,
                         TrainingArguments)
from leanformers.weights import read_safetensors

from trainer_parity import PARITY, QUIET, lm_data, run_both, train_losses
from trainer_run import pad_collate, rows

RUN_SCRIPT = Path(__file__).with_name("trainer_run.py")
TINY_GPT2 = dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=1, eos_token_id=2,
                 pad_token_id=0)


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 written by transformers, with dropout 0.1 (resume must restore the RNG to match)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("gpt2-lm")
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**TINY_GPT2)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_trainer_losses_and_learning_rates_match_transformers(family, llama_checkpoint, gpt2_folder):
    folder = llama_checkpoint("untied")[1] if family == "llama" else gpt2_folder
    model_kwargs = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0} if family == "gpt2" else {}
    ref, ours = run_both(folder, PARITY, lm_data(), model_kwargs)
    expected, got = train_losses(ref), train_losses(ours)
    assert len(got) == 20
    for want, have in zip(expected, got, strict=True):
        assert have["step"] == want["step"] and have["epoch"] == pytest.approx(want["epoch"])
        assert have["loss"] == pytest.approx(want["loss"], abs=1e-4)
        assert have["grad_norm"] == pytest.approx(want["grad_norm"], abs=1e-4)
        assert have["learning_rate"] == want["learning_rate"]
    for (name, theirs), (our_name, mine) in zip(sorted(ref.model.state_dict().items()),
                                                sorted(ours.model.state_dict().items()), strict=True):
        assert name == our_name
        torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


def test_trainer_scheduler_and_weight_decay_groups_match_transformers(llama_checkpoint):
    _, folder = llama_checkpoint("bias")
    args = {**PARITY, "max_steps": 6, "lr_scheduler_type": "cosine", "weight_decay": 0.1}
    ref, ours = run_both(folder, args, lm_data(24))
    decayed = lambda opt: sorted(p.numel() for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"])
    assert decayed(ours.optimizer) == decayed(ref.optimizer) and decayed(ours.optimizer)
    for want, have in zip(train_losses(ref), train_losses(ours), strict=True):
        assert have["loss"] == pytest.approx(want["loss"], abs=1e-4)
        assert have["learning_rate"] == pytest.approx(want["learning_rate"], abs=1e-12)


def test_gradient_accumulation_equals_one_large_batch(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    data = lm_data(32)  # rows of 4 to 11 tokens: micro-batches hold different numbers of label tokens
    results = []
    for batch, accumulation in ((2, 4), (8, 1)):
        trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder),
                          TrainingArguments(str(tmp_path / f"{batch}x{accumulation}"), per_device_train_batch_size=batch,
                                            gradient_accumulation_steps=accumulation, max_steps=4, learning_rate=1e-3,
                                            logging_steps=1, save_strategy="no", train_sampling_strategy="sequential",
                                            **QUIET),
                          train_dataset=Dataset.from_dict(data), data_collator=pad_collate)
        trainer.train()
        results.append(trainer)
    small, large = results
    for a, b in zip(train_losses(small), train_losses(large), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    for (name, a), (_, b) in zip(small.model.state_dict().items(), large.model.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)


def test_evaluate_and_predict_match_transformers(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    data = lm_data(10)
    seen = []

    def metrics(eval_pred):
        logits, labels = eval_pred
        seen.append((logits.shape, labels.shape))
        return {"mean_logit": float(logits[labels != -100].mean())}

    kwargs = dict(data_collator=pad_collate, compute_metrics=metrics)
    args = dict(per_device_eval_batch_size=4, **QUIET)
    ref = transformers.Trainer(transformers.AutoModelForCausalLM.from_pretrained(folder),
                               transformers.TrainingArguments(str(tmp_path / "ref"), **args),
                               eval_dataset=datasets.Dataset.from_dict(data), **kwargs)
    ours = Trainer(AutoModelForCausalLM.from_pretrained(folder), TrainingArguments(str(tmp_path / "ours"), **args),
                   eval_dataset=Dataset.from_dict(data), **kwargs)
    want, have = ref.evaluate(), ours.evaluate()
    assert have["eval_loss"] == pytest.approx(want["eval_loss"], abs=1e-5)
    assert have["eval_mean_logit"] == pytest.approx(want["eval_mean_logit"], abs=1e-5)
    assert seen[0] == seen[1]
    ref_out = ref.predict(datasets.Dataset.from_dict(data))
    our_out = ours.predict(Dataset.from_dict(data))
    np.testing.assert_array_equal(our_out.label_ids, ref_out.label_ids)
    assert our_out.predictions.shape == ref_out.predictions.shape
    real = ref_out.label_ids != -100  # a padded position's logits are whatever each implementation leaves there
    np.testing.assert_allclose(our_out.predictions[real], ref_out.predictions[real], atol=1e-4)
    between_batches = (ref_out.predictions == -100).all(-1)  # batches of different widths padded with -100
    assert between_batches.any() and ((our_out.predictions == -100).all(-1) == between_batches).all()
    assert our_out.metrics["test_loss"] == pytest.approx(ref_out.metrics["test_loss"], abs=1e-5)


def test_training_and_loss_only_evaluation_compute_no_logits(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    data = lm_data(12)
    args = dict(per_device_train_batch_size=4, per_device_eval_batch_size=4, max_steps=2, save_strategy="no", **QUIET)
    ref = transformers.Trainer(transformers.AutoModelForCausalLM.from_pretrained(folder),
                               transformers.TrainingArguments(str(tmp_path / "ref"), **args),
                               eval_dataset=datasets.Dataset.from_dict(data), data_collator=pad_collate)
    model = AutoModelForCausalLM.from_pretrained(folder)
    calls = []  # (training?, logits returned?) of each forward
    model.register_forward_hook(lambda module, inputs, out: calls.append((module.training, out.logits is not None)))
    ours = Trainer(model, TrainingArguments(str(tmp_path / "ours"), **args), train_dataset=Dataset.from_dict(data),
                   eval_dataset=Dataset.from_dict(data), data_collator=pad_collate)
    assert ours.evaluate()["eval_loss"] == pytest.approx(ref.evaluate()["eval_loss"], abs=1e-5)
    ours.train()
    assert calls == [(False, False)] * 3 + [(True, False)] * 2  # nothing reads logits: no compute_metrics
    calls.clear()
    assert ours.predict(Dataset.from_dict(data)).predictions.shape[:2] == (12, max(map(len, data["input_ids"])))
    assert calls == [(False, True)] * 3


def test_predict_without_labels_still_predicts(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    unlabelled = Dataset.from_dict({"input_ids": rows(6)})
    trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder), TrainingArguments(str(tmp_path), **QUIET),
                      data_collator=lambda f: {k: v for k, v in pad_collate([{**x, "labels": x["input_ids"]}
                                                                              for x in f]).items() if k != "labels"})
    out = trainer.predict(unlabelled)
    assert out.label_ids is None and "test_loss" not in out.metrics
    assert out.predictions.shape == (6, max(len(r) for r in rows(6)), 128)


def test_seed_classification_recipe_matches_transformers(tmp_path):
    """The seed's Trainer(model, args, train_dataset, eval_dataset, data_collator, tokenizer=...) on MiniLM."""
    from leanformers.hub import bundled_model_path

    path = bundled_model_path("all-minilm-l6-v2")
    pairs = [("the cat sat", "a cat was sitting"), ("it rains", "the sun is out"), ("good food", "tasty meal"),
             ("stocks fell", "markets dropped"), ("he left", "she arrived"), ("red car", "blue truck")] * 2
    raw = {"sentence1": [a for a, _ in pairs], "sentence2": [b for _, b in pairs],
           "label": [i % 2 for i in range(len(pairs))], "idx": list(range(len(pairs)))}
    no_dropout = dict(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    args = dict(max_steps=3, per_device_train_batch_size=4, logging_steps=1, eval_strategy="steps", eval_steps=3,
                save_strategy="no", train_sampling_strategy="sequential", **QUIET)
    results = []
    for lib, data_lib in ((transformers, datasets), (leanformers, leanformers)):
        tokenizer = lib.AutoTokenizer.from_pretrained(path)
        tokenized = data_lib.Dataset.from_dict(raw).map(
            lambda e: tokenizer(e["sentence1"], e["sentence2"], truncation=True), batched=True)
        torch.manual_seed(0)  # the new classifier layer starts from the same random weights
        model = lib.AutoModelForSequenceClassification.from_pretrained(path, **no_dropout)
        trainer = lib.Trainer(model, lib.TrainingArguments(str(tmp_path / lib.__name__), **args),
                              train_dataset=tokenized, eval_dataset=tokenized,
                              data_collator=lib.DataCollatorWithPadding(tokenizer=tokenizer),
                              **({"processing_class": tokenizer} if lib is transformers else {"tokenizer": tokenizer}))
        trainer.train()
        results.append(trainer.state.log_history)
    want, have = results
    for key in ("loss", "eval_loss"):
        expected, got = [e[key] for e in want if key in e], [e[key] for e in have if key in e]
        assert len(got) == (3 if key == "loss" else 1)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_unused_columns_are_dropped_before_the_collator(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    data = {**lm_data(8), "text": ["a string the collator cannot pad"] * 8}
    trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder),
                      TrainingArguments(str(tmp_path / "a"), max_steps=2, save_strategy="no", **QUIET),
                      train_dataset=Dataset.from_dict(data), data_collator=pad_collate_strict)
    assert trainer.train().global_step == 2
    kept = Trainer(AutoModelForCausalLM.from_pretrained(folder),
                   TrainingArguments(str(tmp_path / "b"), max_steps=2, save_strategy="no", remove_unused_columns=False,
                                     train_sampling_strategy="sequential", **QUIET),
                   train_dataset=Dataset.from_dict(data), data_collator=pad_collate_strict)
    with pytest.raises(ValueError, match=r"data collator failed on examples \[0, 1, 2, 3, 4, 5, 6, 7\]"):
        kept.train()


def pad_collate_strict(features):
    if any(set(f) - {"input_ids", "labels"} for f in features):
        raise KeyError(f"unexpected columns {sorted(set(features[0]) - {'input_ids', 'labels'})}")
    return pad_collate(features)


def test_log_file_and_loss_curve(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    data = lm_data(16)
    trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder),
                      TrainingArguments(str(tmp_path), max_steps=4, per_device_train_batch_size=4, logging_steps=2,
                                        eval_strategy="steps", eval_steps=2, save_strategy="no", **QUIET),
                      train_dataset=Dataset.from_dict(data), eval_dataset=Dataset.from_dict(lm_data(4)),
                      data_collator=pad_collate)
    trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "trainer_log.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(trainer.state.log_history))
    assert [e["step"] for e in lines if "loss" in e] == [2, 4]
    assert [e["step"] for e in lines if "eval_loss" in e] == [2, 4]
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_folder_holds_everything_and_loads_in_transformers(llama_checkpoint, tmp_path):
    ref_model, folder = llama_checkpoint("untied")
    trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder),
                      TrainingArguments(str(tmp_path), max_steps=4, save_steps=2, save_total_limit=1, **QUIET),
                      train_dataset=Dataset.from_dict(lm_data(16)), data_collator=pad_collate)
    trainer.train()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["checkpoint-4"]
    checkpoint = tmp_path / "checkpoint-4"
    assert {"model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
            "training_args.json"} <= {p.name for p in checkpoint.iterdir()}
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and len(state["log_history"]) == 0  # logging_steps default is 500
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(checkpoint)
    ids = torch.tensor([rows(1)[0]])
    torch.testing.assert_close(reloaded(ids).logits, trainer.model(ids).logits, atol=1e-4, rtol=0)


def test_early_stopping_and_best_checkpoint_kept(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    scores = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.95])  # best at step 2, then two evaluations without improvement
    args = TrainingArguments(str(tmp_path), max_steps=10, eval_strategy="steps", eval_steps=1, save_steps=1,
                             save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="score",
                             greater_is_better=False, per_device_train_batch_size=4, learning_rate=1e-2, **QUIET)
    trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder), args, train_dataset=Dataset.from_dict(lm_data(40)),
                      eval_dataset=Dataset.from_dict(lm_data(4)), data_collator=pad_collate,
                      compute_metrics=lambda pred: {"score": next(scores)},
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()
    assert trainer.state.global_step == 4
    assert trainer.state.best_metric == 0.5 and trainer.state.best_global_step == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["checkpoint-2", "checkpoint-4"]
    best = read_safetensors(tmp_path / "checkpoint-2" / "model.safetensors")
    for name, tensor in best.items():  # load_best_model_at_end put step 2's weights back
        torch.testing.assert_close(trainer.model.state_dict()[name], tensor, atol=0, rtol=0)


# -- runs in their own processes: kill, stop, resume, distribute -----------------------------------------
def run(model_dir, out_dir, *extra, env=None, wait=True):
    command = [sys.executable, str(RUN_SCRIPT), str(model_dir), str(out_dir), *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **(env or {})})
    if wait:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
    return process


def wait_for(path: Path, process, timeout=120):
    start = time.time()
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() - start < timeout
        time.sleep(0.01)


def final_state(out_dir: Path):
    return (json.loads((out_dir / "history.json").read_text()),
            read_safetensors(out_dir / "final" / "model.safetensors"))


def assert_same_run(a, b):
    history_a, weights_a = a
    history_b, weights_b = b
    assert len(history_a) == 15
    for x, y in zip(history_a, history_b, strict=True):
        assert x == y
    for (name, x), (_, y) in zip(sorted(weights_a.items()), sorted(weights_b.items()), strict=True):
        torch.testing.assert_close(x, y, atol=0, rtol=0, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(gpt2_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run(gpt2_folder, out)
    return final_state(out)


def test_sigkill_then_resume_gives_the_uninterrupted_run(gpt2_folder, uninterrupted, tmp_path):
    process = run(gpt2_folder, tmp_path, "--step-delay", "0.5", wait=False)
    wait_for(tmp_path / "checkpoint-7", process)
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "checkpoint-9").exists()
    run(gpt2_folder, tmp_path, "--resume")
    assert_same_run(uninterrupted, final_state(tmp_path))


def test_sigterm_saves_a_checkpoint_and_exits_then_resumes(gpt2_folder, uninterrupted, tmp_path):
    process = run(gpt2_folder, tmp_path, "--step-delay", "0.5", wait=False)
    wait_for(tmp_path / "checkpoint-5", process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    stopped_at = int(err.split("stopped after step ")[1].split(";")[0])
    assert 5 <= stopped_at < 15 and (tmp_path / f"checkpoint-{stopped_at}").is_dir()
    assert "resume_from_checkpoint=True" in err
    run(gpt2_folder, tmp_path, "--resume")
    assert_same_run(uninterrupted, final_state(tmp_path))


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one(llama_checkpoint, tmp_path, monkeypatch):
    _, folder = llama_checkpoint("untied")
    args = TrainingArguments(str(tmp_path), max_steps=6, save_steps=1, logging_steps=1, **QUIET)
    trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder), args, train_dataset=Dataset.from_dict(lm_data(24)),
                      data_collator=pad_collate)
    import leanformers.training.checkpoints as checkpoints

    real = checkpoints.save_training_state

    def crash_at_step_4(folder, optimizer, scheduler, scaler, state, args_json):
        if state.global_step == 4:
            torch.save(optimizer.state_dict(), folder / "optimizer.pt")  # half the files are on disk
            raise KeyboardInterrupt("killed while writing")
        real(folder, optimizer, scheduler, scaler, state, args_json)

    monkeypatch.setattr("leanformers.training.trainer.save_training_state", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert checkpoints.last_checkpoint(tmp_path).name == "checkpoint-3"
    assert (tmp_path / "tmp-checkpoint-4").is_dir() and not (tmp_path / "checkpoint-4").exists()
    monkeypatch.setattr("leanformers.training.trainer.save_training_state", real)
    resumed = Trainer(AutoModelForCausalLM.from_pretrained(folder), args, train_dataset=Dataset.from_dict(lm_data(24)),
                      data_collator=pad_collate)
    assert resumed.train(resume_from_checkpoint=True).global_step == 6
    assert [e["step"] for e in train_losses(resumed)] == [1, 2, 3, 4, 5, 6]


def test_ddp_two_processes_give_the_losses_of_one(gpt2_folder, tmp_path):
    no_dropout = tmp_path / "model"
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model.save_pretrained(no_dropout)
    run(no_dropout, tmp_path / "one", "--batch-size", "4")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               str(RUN_SCRIPT), str(no_dropout), str(tmp_path / "two"), "--batch-size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    for x, y in zip(one[0], two[0], strict=True):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-5) and y["learning_rate"] == x["learning_rate"]
    for (name, x), (_, y) in zip(sorted(one[1].items()), sorted(two[1].items()), strict=True):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=0, msg=name)
    assert not list((tmp_path / "two").glob("checkpoint-*/rng_state.pth"))  # one RNG file per process
    assert len(list((tmp_path / "two" / "checkpoint-15").glob("rng_state_*.pth"))) == 2
    one_process = run(no_dropout, tmp_path / "two", "--resume", wait=False)
    _, err = one_process.communicate(timeout=120)
    assert one_process.returncode == 1 and "was written by 2 process(es); resume it with the same number" in err


# -- bad input --------------------------------------------------------------------------------------------
def test_training_arguments_defaults_follow_transformers():
    ours, theirs = TrainingArguments("out"), transformers.TrainingArguments("out")
    for name in ("learning_rate", "per_device_train_batch_size", "num_train_epochs", "max_steps", "weight_decay",
                 "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "logging_steps", "save_steps", "seed",
                 "gradient_accumulation_steps", "lr_scheduler_type", "eval_strategy", "save_strategy", "optim",
                 "warmup_steps", "remove_unused_columns", "dataloader_num_workers", "load_best_model_at_end"):
        assert str(getattr(ours, name)).split(".")[-1].lower() == str(getattr(theirs, name)).split(".")[-1].lower(), name
    assert TrainingArguments().output_dir == transformers.TrainingArguments().output_dir
    assert TrainingArguments("o", evaluation_strategy="epoch").eval_strategy == "epoch"
    assert TrainingArguments("o", warmup_ratio=0.1).get_warmup_steps(100) == 10


@pytest.mark.parametrize("kwargs, message", [
    ({"deepspeed": "ds.json", "fsdp": "full"}, "leanformers does not have: deepspeed, fsdp"),
    ({"lr_scheduler_type": "warmup_linear"}, "cosine_with_restarts"),
    ({"fp16": True}, "fp16 mixed precision needs a GPU"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be a positive integer"),
    ({"eval_strategy": "sometimes"}, "eval_strategy='sometimes' is not one of no, steps, epoch"),
    ({"report_to": "wandb"}, r"report_to \['wandb'\] is not supported"),
    ({"load_best_model_at_end": True}, "load_best_model_at_end needs evaluations"),
    ({"eval_strategy": "steps", "eval_steps": 3, "save_steps": 4, "load_best_model_at_end": True}, "multiple of"),
    ({"push_to_hub": True}, "never uploads"),
])
def test_training_arguments_refuse_bad_values(kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        TrainingArguments("out", **kwargs)


def test_bf16_without_cpu_support_is_refused(monkeypatch):
    monkeypatch.setattr("leanformers.training.arguments.cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="no bf16 instructions"):
        TrainingArguments("out", bf16=True, use_cpu=True)


def test_bf16_autocast_trains_close_to_fp32(llama_checkpoint, tmp_path):
    if not leanformers.training.arguments.cpu_has_bf16():  # a CPU without bf16 refuses it, as tested above
        with pytest.raises(ValueError, match="no bf16 instructions"):
            TrainingArguments(str(tmp_path), bf16=True, use_cpu=True)
        return
    _, folder = llama_checkpoint("untied")
    losses = []
    for bf16 in (False, True):
        trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder),
                          TrainingArguments(str(tmp_path / str(bf16)), max_steps=3, bf16=bf16, logging_steps=1,
                                            save_strategy="no", use_cpu=True, **QUIET),
                          train_dataset=Dataset.from_dict(lm_data(24)), data_collator=pad_collate)
        trainer.train()
        losses.append([e["loss"] for e in train_losses(trainer)])
        seen = []
        trainer.model.lm_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        with trainer.autocast():
            trainer.model(torch.tensor([[3, 4, 5]]))
        assert seen == [torch.bfloat16 if bf16 else torch.float32]
    np.testing.assert_allclose(losses[1], losses[0], atol=5e-2)


def make_trainer(folder, tmp_path, data=None, **kwargs):
    args = {"max_steps": 2, "save_strategy": "no", **QUIET, **kwargs.pop("args", {})}
    return Trainer(AutoModelForCausalLM.from_pretrained(folder), TrainingArguments(str(tmp_path), **args),
                   train_dataset=Dataset.from_dict(data or lm_data(8)), data_collator=pad_collate, **kwargs)


def test_bad_training_input_gets_clear_errors(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    with pytest.raises(ValueError, match="eval_strategy='steps' needs an eval_dataset"):
        make_trainer(folder, tmp_path, args={"eval_strategy": "steps"}).train()
    with pytest.raises(ValueError, match="nothing to train: max_steps=0 and num_train_epochs=0"):
        make_trainer(folder, tmp_path, args={"max_steps": 0, "num_train_epochs": 0}).train()
    unlabelled = Trainer(AutoModelForCausalLM.from_pretrained(folder),
                         TrainingArguments(str(tmp_path), max_steps=1, save_strategy="no", **QUIET),
                         train_dataset=Dataset.from_dict({"input_ids": rows(4)}),
                         data_collator=lambda f: {"input_ids": pad_collate([{**x, "labels": x["input_ids"]}
                                                                            for x in f])["input_ids"]})
    with pytest.raises(ValueError, match=r"LlamaForCausalLM returned no loss: the batch has \['input_ids'\]"):
        unlabelled.train()
    with pytest.raises(ValueError, match="holds no checkpoint"):
        make_trainer(folder, tmp_path / "empty").train(resume_from_checkpoint=True)
    assert not (tmp_path / "empty").exists() or not list((tmp_path / "empty").glob("checkpoint-*"))


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")

    class PoisonAfterStep3(TrainerCallback):
        def on_save(self, args, state, control, model=None, **kwargs):
            if state.global_step == 3:
                with torch.no_grad():
                    model.lm_head.weight[0, 0] = float("nan")

    trainer = make_trainer(folder, tmp_path, args={"max_steps": 6, "save_steps": 1, "save_strategy": "steps"},
                           callbacks=[PoisonAfterStep3()])
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 4 .*checkpoint-3"):
        trainer.train()
    saved = read_safetensors(tmp_path / "checkpoint-3" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in saved.values())


def test_checkpoint_of_another_model_is_refused_with_both_names(llama_checkpoint, gpt2_folder, tmp_path):
    _, folder = llama_checkpoint("untied")
    make_trainer(folder, tmp_path, args={"save_strategy": "steps", "save_steps": 2}).train()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoint-2").iterdir()}
    gpt2 = Trainer(AutoModelForCausalLM.from_pretrained(gpt2_folder), TrainingArguments(str(tmp_path), max_steps=2, **QUIET),
                   train_dataset=Dataset.from_dict(lm_data(8)), data_collator=pad_collate)
    with pytest.raises(ValueError, match="checkpoint of a LlamaForCausalLM, but this Trainer trains a GPT2LMHeadModel"):
        gpt2.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "checkpoint-2").iterdir()} == before


def test_lora_training_saves_an_adapter_peft_loads(llama_checkpoint, tmp_path):
    import peft

    ref_model, folder = llama_checkpoint("untied")
    model = leanformers.get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                                       leanformers.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer = Trainer(model, TrainingArguments(str(tmp_path), max_steps=3, learning_rate=1e-2, save_steps=3, **QUIET),
                      train_dataset=Dataset.from_dict(lm_data(12)), data_collator=pad_collate)
    trainer.train()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert (tmp_path / "checkpoint-3" / "adapter_model.safetensors").is_file()
    trainer.save_model(tmp_path / "adapter")
    theirs = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(folder),
                                            tmp_path / "adapter").eval()
    ids = torch.tensor([rows(1)[0]])
    model.eval()
    torch.testing.assert_close(model(ids).logits, theirs(ids).logits, atol=1e-4, rtol=0)


def test_gradient_checkpointing_argument_trains_the_same(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    runs = []
    for checkpointing in (False, True):
        trainer = make_trainer(folder, tmp_path / str(checkpointing),
                               args={"max_steps": 3, "logging_steps": 1, "gradient_checkpointing": checkpointing})
        assert trainer.model.is_gradient_checkpointing == checkpointing
        trainer.train()
        runs.append(trainer)
    for a, b in zip(train_losses(runs[0]), train_losses(runs[1]), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["grad_norm"] == pytest.approx(b["grad_norm"], abs=1e-5)


def test_seed_gpt2_recipe_with_a_torch_dataset_matches_transformers(gpt2_folder, tmp_path):
    """The seed's MyDset (a torch Dataset of equal-length blocks as tensors), no collator, no tokenizer."""
    class MyDset(torch.utils.data.Dataset):
        def __init__(self, data):
            self.data = [{"input_ids": torch.tensor(d), "attention_mask": torch.ones(len(d), dtype=torch.int64),
                          "labels": torch.tensor(d)} for d in data]

        def __len__(self):
            return len(self.data)

        def __getitem__(self, idx):
            return self.data[idx]

    generator = torch.Generator().manual_seed(1)
    blocks = torch.randint(3, 128, (12, 16), generator=generator).tolist()
    args = dict(learning_rate=1e-3, max_steps=4, per_device_train_batch_size=4, logging_steps=1, eval_strategy="steps",
                eval_steps=2, save_strategy="no", train_sampling_strategy="sequential", **QUIET)
    no_dropout = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    histories = []
    for lib in (transformers, leanformers):
        model = lib.GPT2LMHeadModel.from_pretrained(gpt2_folder, **no_dropout)
        if lib is transformers:
            model.loss_type = "ForCausalLM"  # see run_both
        trainer = lib.Trainer(model=model, args=lib.TrainingArguments(output_dir=str(tmp_path / lib.__name__), **args),
                              train_dataset=MyDset(blocks[:8]), eval_dataset=MyDset(blocks[8:]))
        trainer.train()
        histories.append(trainer.state.log_history)
    for key in ("loss", "eval_loss"):
        want, have = ([e[key] for e in h if key in e] for h in histories)
        assert len(have) == (4 if key == "loss" else 2)
        np.testing.assert_allclose(have, want, atol=1e-4)


def test_streamed_dataset_trains_like_the_same_rows_in_order(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    data = lm_data(16)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"input_ids": i, "labels": l}) + "\n"
                            for i, l in zip(data["input_ids"], data["labels"], strict=True)))
    streamed = leanformers.load_dataset("json", data_files=str(path), split="train", streaming=True)
    runs = []
    for name, dataset in (("streamed", streamed), ("in-memory", Dataset.from_dict(data))):
        trainer = Trainer(AutoModelForCausalLM.from_pretrained(folder),
                          TrainingArguments(str(tmp_path / name), max_steps=6, per_device_train_batch_size=2,
                                            gradient_accumulation_steps=2, logging_steps=1, save_strategy="no",
                                            train_sampling_strategy="sequential", **QUIET),
                          train_dataset=dataset, data_collator=pad_collate)
        trainer.train()
        runs.append([e["loss"] for e in train_losses(trainer)])
    assert len(runs[0]) == 6
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)  # 16 rows = 4 steps an epoch: the stream restarts
    with pytest.raises(ValueError, match="iterable dataset with no length: set max_steps"):
        Trainer(AutoModelForCausalLM.from_pretrained(folder), TrainingArguments(str(tmp_path / "x"), **QUIET),
                train_dataset=streamed, data_collator=pad_collate).train()


def test_preprocess_logits_for_metrics_matches_transformers(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    data = lm_data(6)
    outputs = []
    for lib, data_lib in ((transformers, datasets), (leanformers, leanformers)):
        trainer = lib.Trainer(lib.AutoModelForCausalLM.from_pretrained(folder),
                              lib.TrainingArguments(str(tmp_path / lib.__name__), per_device_eval_batch_size=4, **QUIET),
                              data_collator=pad_collate,
                              preprocess_logits_for_metrics=lambda logits, labels: logits.argmax(-1))
        outputs.append(trainer.predict(data_lib.Dataset.from_dict(data)))
    want, have = outputs
    real = want.label_ids != -100
    assert have.predictions.shape == want.predictions.shape
    np.testing.assert_array_equal(have.predictions[real], want.predictions[real])


def test_report_to_tensorboard_follows_what_is_installed(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ValueError, match="needs the tensorboard package: pip install tensorboard"):
            TrainingArguments(str(tmp_path), report_to="tensorboard")
        assert TrainingArguments(str(tmp_path), report_to="all").report_to == []
    else:
        assert TrainingArguments(str(tmp_path), report_to="all").report_to == ["tensorboard"]


def test_log_eval_and_save_schedule_matches_transformers(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    args = dict(num_train_epochs=2, per_device_train_batch_size=4, logging_steps=3, logging_first_step=True,
                eval_strategy="epoch", save_strategy="epoch", train_sampling_strategy="sequential", **QUIET)
    data = lm_data(20)  # 5 steps an epoch
    schedules = []
    for lib, data_lib in ((transformers, datasets), (leanformers, leanformers)):
        out = tmp_path / lib.__name__
        trainer = lib.Trainer(lib.AutoModelForCausalLM.from_pretrained(folder), lib.TrainingArguments(str(out), **args),
                              train_dataset=data_lib.Dataset.from_dict(data),
                              eval_dataset=data_lib.Dataset.from_dict(lm_data(4)), data_collator=pad_collate)
        trainer.train()
        logged = [(e["step"], "loss" if "loss" in e else "eval" if "eval_loss" in e else "end")
                  for e in trainer.state.log_history]
        schedules.append((logged, sorted(p.name for p in out.glob("checkpoint-*"))))
    assert schedules[1] == schedules[0]
    assert schedules[1][1] == ["checkpoint-10", "checkpoint-5"]


def test_dataloader_workers_give_the_same_training(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    losses = []
    for workers in (0, 2):
        trainer = make_trainer(folder, tmp_path / str(workers), data=lm_data(16),
                               args={"max_steps": 4, "logging_steps": 1, "dataloader_num_workers": workers,
                                     "per_device_train_batch_size": 2})
        trainer.train()
        losses.append([e["loss"] for e in train_losses(trainer)])
    assert len(losses[0]) == 4 and losses[0] == losses[1]
