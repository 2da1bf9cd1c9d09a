"""Trainer: the training loop, evaluation and checkpoints, under transformers' names and numbers.

One optimizer step takes gradient_accumulation_steps micro-batches. Their labels are counted first, and
a causal LM divides its summed loss by that count (num_items_in_batch), so the accumulated gradient is
the gradient of the large batch's mean loss over its tokens (as transformers does); other models'
mean losses are divided by the number of micro-batches. Under torchrun each process takes every
world_size-th example, the token count is summed over processes, and DistributedDataParallel
averages the gradients.

Data order is a function of (seed, epoch) alone: resuming rebuilds the epoch's batches of indices and
skips the ones already trained on, without loading or collating them again.
"""

import atexit
import math
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.collators import DataCollatorWithPadding, default_data_collator
from .arguments import TrainingArguments
from .batches import (IndexedExamples, default_label_names, epoch_batches, forward_parameters, input_tokens,
                      stream_batches, unwrap)
from .callbacks import CallbackHandler, TrainerControl, TrainerState
from .checkpoints import (ARGS_NAME, OPTIMIZER_NAME, STATE_NAME, check_checkpoint_model, last_checkpoint,
                          load_model_weights, load_training_state, rotate_checkpoints, rng_states, save_rng_states,
                          save_training_state, set_rng_states, write_checkpoint)
from .evaluation import EvalPrediction, PredictionOutput, as_numpy, pad_and_concat
from .optimization import get_scheduler, parameter_groups, set_seed
from .reports import RunReports

NOT_PREDICTIONS = ("loss", "cache", "past_key_values", "hidden_states", "attentions")


def destroy_process_group():
    if dist.is_initialized():
        dist.destroy_process_group()


class TrainOutput(NamedTuple):
    global_step: int
    training_loss: float
    metrics: dict


class Trainer:
    def __init__(self, model=None, args: TrainingArguments | None = None, data_collator=None, train_dataset=None,
                 eval_dataset=None, processing_class=None, model_init=None, compute_loss_func=None,
                 compute_metrics=None, callbacks=None, optimizers=(None, None), preprocess_logits_for_metrics=None,
                 tokenizer=None):
        self.args = args if args is not None else TrainingArguments()
        set_seed(self.args.seed)
        if model is None:
            if model_init is None:
                raise ValueError("Trainer needs a model (or model_init, a function that returns one)")
            model = model_init()
        if tokenizer is not None and processing_class is not None and tokenizer is not processing_class:
            raise ValueError("pass the tokenizer once: processing_class (v5's name) or tokenizer (v4's)")
        self.processing_class = processing_class if processing_class is not None else tokenizer
        self.setup_distributed()
        self.model = model.to(self.args.device)
        if self.args.gradient_checkpointing:
            if not hasattr(unwrap(model), "gradient_checkpointing_enable"):
                raise ValueError(f"{type(unwrap(model)).__name__} has no gradient_checkpointing_enable()")
            unwrap(model).gradient_checkpointing_enable(self.args.gradient_checkpointing_kwargs)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        if data_collator is None:
            data_collator = (DataCollatorWithPadding(self.processing_class) if hasattr(self.processing_class, "pad")
                             else default_data_collator)
        self.data_collator = data_collator
        self.compute_loss_func, self.compute_metrics = compute_loss_func, compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.label_names = self.args.label_names if self.args.label_names is not None else default_label_names(model)
        self.model_columns = forward_parameters(model) | set(self.label_names) | {"label", "label_ids"}
        self.passes_item_count = "num_items_in_batch" in forward_parameters(model)
        # A causal LM head can give the loss alone, never holding the (B, T, V) logits (transformers does this
        # only under use_liger_kernel=True); a custom loss or compute_metrics still gets logits.
        self.loss_skips_logits = "skip_logits" in forward_parameters(model)
        self.loss_shifts_labels = getattr(unwrap(model), "can_generate", lambda: False)()
        self.state = TrainerState(is_local_process_zero=self.args.should_save,
                                  is_world_process_zero=self.args.should_save)
        self.control = TrainerControl()
        self.callback_handler = CallbackHandler(callbacks or [], model=self.model,
                                                processing_class=self.processing_class)
        self.stop_signal = None
        self.reports = RunReports(self.args.output_dir, self.args.report_to, self.args.logging_dir) \
            if self.args.should_save else None
        self.control = self.callback_handler.call("on_init_end", self.args, self.state, self.control)

    # -- processes and devices ------------------------------------------------------------------------
    def setup_distributed(self):
        """Under torchrun (WORLD_SIZE > 1): one process group, gloo on CPU, nccl on GPU."""
        self.world_size, self.rank = self.args.world_size, self.args.process_index
        if self.world_size > 1 and not dist.is_initialized():
            device = self.args.device
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            # A process that exits with the group alive can abort (SIGABRT) in interpreter teardown, while
            # gloo's worker threads still hold tensors; transformers' users under torchrun never call
            # destroy_process_group themselves, so the Trainer that made the group ends it.
            atexit.register(destroy_process_group)

    def autocast(self):
        if self.args.bf16 or self.args.fp16:
            dtype = torch.bfloat16 if self.args.bf16 else torch.float16
            return torch.autocast(self.args.device.type, dtype=dtype)
        return nullcontext()

    def all_reduce(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        if self.world_size > 1:
            tensor = tensor.clone()
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    # -- callbacks -------------------------------------------------------------------------------------
    def add_callback(self, callback):
        self.callback_handler.add_callback(callback)

    def remove_callback(self, callback):
        self.callback_handler.remove_callback(callback)

    def pop_callback(self, callback):
        found = next((c for c in self.callback_handler.callbacks if c is callback or type(c) is callback), None)
        self.callback_handler.remove_callback(callback)
        return found

    def event(self, name: str, **kwargs):
        self.control = self.callback_handler.call(name, self.args, self.state, self.control, **kwargs)

    # -- data ------------------------------------------------------------------------------------------
    def collate(self, items: list):
        indices = [index for index, _ in items]
        features = [example for _, example in items]
        if self.args.remove_unused_columns and features and hasattr(features[0], "keys"):
            features = [{k: v for k, v in f.items() if k in self.model_columns} for f in features]
            if not features[0]:
                raise ValueError(f"the examples have no column the model's forward takes (columns "
                                 f"{sorted(items[0][1].keys())}; forward takes {sorted(self.model_columns)})")
        try:
            return self.data_collator(features)
        except Exception as err:
            raise ValueError(f"the data collator failed on examples {indices}: {type(err).__name__}: {err}") from err

    def loader(self, dataset, batches: list, num_workers: int) -> DataLoader:
        return DataLoader(IndexedExamples(dataset), batch_sampler=batches, collate_fn=self.collate,
                          num_workers=num_workers, generator=torch.Generator().manual_seed(self.args.seed))

    def train_batches(self, epoch: int) -> list[list[int]]:
        args = self.args
        return epoch_batches(len(self.train_dataset), args.per_device_train_batch_size, epoch,
                             args.data_seed if args.data_seed is not None else args.seed,
                             args.train_sampling_strategy == "random", self.rank, self.world_size,
                             args.dataloader_drop_last)

    def get_train_dataloader(self, epoch: int = 0, skip_batches: int = 0):
        """The epoch's micro-batches after the first skip_batches (skipped by index, never loaded)."""
        if self.train_dataset is None:
            raise ValueError("Trainer.train() needs a train_dataset")
        if hasattr(self.train_dataset, "__len__"):
            return self.loader(self.train_dataset, self.train_batches(epoch)[skip_batches:],
                               self.args.dataloader_num_workers)
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(epoch)
        return map(self.collate, stream_batches(self.train_dataset, self.args.per_device_train_batch_size, self.rank,
                                                self.world_size, skip_batches, self.args.dataloader_drop_last))

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluation needs an eval_dataset (Trainer(eval_dataset=...) or evaluate(dataset))")
        batches = epoch_batches(len(dataset), self.args.per_device_eval_batch_size, 0, 0, shuffle=False)
        return self.loader(dataset, batches, self.args.dataloader_num_workers)

    get_test_dataloader = get_eval_dataloader

    # -- optimizer and schedule -----------------------------------------------------------------------
    def create_optimizer(self):
        if self.optimizer is None:
            args = self.args
            self.optimizer = torch.optim.AdamW(parameter_groups(self.model, args.weight_decay), lr=args.learning_rate,
                                               betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                                               fused=args.optim == "adamw_torch_fused")
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            self.lr_scheduler = get_scheduler(self.args.lr_scheduler_type, optimizer or self.optimizer,
                                              self.args.get_warmup_steps(num_training_steps), num_training_steps,
                                              scheduler_specific_kwargs=self.args.lr_scheduler_kwargs)
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int):
        self.create_optimizer()
        self.create_scheduler(num_training_steps)

    def plan(self) -> tuple[int, int, int]:
        """(micro-batches per epoch or None for a stream, optimizer steps per epoch, max_steps)."""
        args = self.args
        if not hasattr(self.train_dataset, "__len__"):
            if args.max_steps <= 0:
                raise ValueError("the train_dataset is an iterable dataset with no length: set max_steps")
            return None, 1, args.max_steps
        batches = len(self.train_batches(0))
        if batches == 0:
            raise ValueError(f"the train_dataset gives no batch ({len(self.train_dataset)} examples, "
                             f"batch size {args.per_device_train_batch_size}, drop_last {args.dataloader_drop_last})")
        updates = math.ceil(batches / args.gradient_accumulation_steps)
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * updates)
        if max_steps <= 0:
            raise ValueError(f"nothing to train: max_steps={args.max_steps} and num_train_epochs="
                             f"{args.num_train_epochs}; set one of them above 0")
        return batches, updates, max_steps

    # -- the loop --------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint=None, **kwargs):
        if kwargs:
            raise TypeError(f"train() got unexpected arguments {sorted(kwargs)}")
        args = self.args
        if args.eval_strategy != "no" and self.eval_dataset is None:
            raise ValueError(f"eval_strategy={args.eval_strategy!r} needs an eval_dataset")
        batches_per_epoch, updates_per_epoch, max_steps = self.plan()
        self.state = TrainerState(max_steps=max_steps, logging_steps=args.steps_of("logging_steps", max_steps),
                                  eval_steps=args.steps_of("eval_steps", max_steps) if args.eval_steps else 0,
                                  save_steps=args.steps_of("save_steps", max_steps),
                                  train_batch_size=args.per_device_train_batch_size,
                                  num_train_epochs=math.ceil(max_steps / updates_per_epoch),  # a stream: a bound
                                  is_local_process_zero=args.should_save, is_world_process_zero=args.should_save,
                                  world_size=self.world_size, model_class=type(unwrap(self.model)).__name__)
        self.create_optimizer_and_scheduler(max_steps)
        self.scaler = torch.amp.GradScaler("cuda") if args.fp16 else None
        resume = resume_from_checkpoint if resume_from_checkpoint is not None else args.resume_from_checkpoint
        rng = self.resume(resume) if resume not in (None, False) else None
        model = self.model
        if self.world_size > 1:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[args.device] if args.device.type == "cuda" else None)
        self.callback_handler.objects.update(optimizer=self.optimizer, lr_scheduler=self.lr_scheduler)
        self.tr_loss, self.last_logged_step = torch.zeros((), device=args.device), self.state.global_step
        self.total_loss, self.first_step, start = 0.0, self.state.global_step, time.time()
        first_epoch, skip = self.state.epoch_index, self.state.batches_in_epoch
        if rng is not None:
            set_rng_states(rng)
        if self.reports is not None:
            self.reports.restart(self.state.log_history)
        bar = tqdm(total=max_steps, initial=self.state.global_step, desc="train", dynamic_ncols=True,
                   disable=args.disable_tqdm or not args.should_save)
        model.zero_grad(set_to_none=True)
        previous_handlers = self.catch_stop_signals()
        try:
            self.event("on_train_begin")
            if args.eval_on_start:
                self.evaluate()
            for epoch in range(first_epoch, self.state.num_train_epochs):
                self.run_epoch(model, epoch, skip if epoch == first_epoch else 0, batches_per_epoch, bar)
                if self.control.should_training_stop or self.state.global_step >= max_steps or self.stop_signal:
                    break
        finally:
            bar.close()
            self.restore_signal_handlers(previous_handlers)
        if self.stop_signal is not None:
            self.stopped_by_signal()
        return self.finish_training(start)

    def run_epoch(self, model, epoch: int, skip: int, batches_per_epoch: int | None, bar):
        args = self.args
        self.event("on_epoch_begin")
        micro_batches = iter(self.get_train_dataloader(epoch, skip))
        done = skip
        while self.state.global_step < self.state.max_steps:
            group = [batch for _, batch in zip(range(args.gradient_accumulation_steps), micro_batches)]
            if not group:
                self.state.epoch_index, self.state.batches_in_epoch = epoch + 1, 0  # a stream ran out
                break
            done += len(group)
            finished = done == batches_per_epoch
            self.state.epoch_index, self.state.batches_in_epoch = (epoch + 1, 0) if finished else (epoch, done)
            self.event("on_step_begin")
            self.optimizer_step(model, group, epoch + done / batches_per_epoch if batches_per_epoch else None, bar)
            if self.control.should_epoch_stop or self.control.should_training_stop or self.stop_requested():
                break
        if done == 0:
            raise ValueError(f"the train_dataset gave no batch in epoch {epoch}: it is empty")
        self.control.should_epoch_stop = False
        self.state.epoch = float(epoch + 1) if batches_per_epoch and done == batches_per_epoch else self.state.epoch
        self.event("on_epoch_end")
        self.maybe_log_save_evaluate(epoch_end=True)

    def count_items(self, group: list):
        """Tokens that carry a loss in the whole accumulated batch (over every process)."""
        if not self.passes_item_count or any("labels" not in b for b in group):
            return None
        count = sum(int((b["labels"][..., 1:] if self.loss_shifts_labels else b["labels"]).ne(-100).sum())
                    for b in group)
        if self.world_size > 1 and self.args.average_tokens_across_devices:
            count = int(self.all_reduce(torch.tensor(count, device=self.args.device)))
        return count

    def optimizer_step(self, model, group: list, epoch: float | None, bar):
        args = self.args
        num_items = self.count_items(group)
        step_loss = torch.zeros((), device=args.device)
        for i, inputs in enumerate(group):
            last = i == len(group) - 1
            self.state.num_input_tokens_seen += input_tokens(inputs) * self.world_size
            sync = nullcontext() if last or self.world_size == 1 else model.no_sync()
            with sync:
                step_loss += self.training_step(model, inputs, num_items, len(group))
            if not last:
                self.event("on_substep_end")
        if not torch.isfinite(self.all_reduce(step_loss)):
            last = last_checkpoint(args.output_dir)
            raise FloatingPointError(
                f"the training loss is {float(step_loss)} at step {self.state.global_step + 1} (before its update); "
                f"training stopped. The last good checkpoint is {last if last else 'none (none was saved yet)'}")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm if args.max_grad_norm > 0 else math.inf)
        self.event("on_pre_optimizer_step")
        skipped = False
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale  # inf/nan gradients: no update, and a smaller scale
        else:
            self.optimizer.step()
        self.event("on_optimizer_step")
        learning_rate = self.lr_scheduler.get_last_lr()[0]
        if not skipped:  # as in transformers: a step the fp16 scaler skipped does not advance the schedule
            self.lr_scheduler.step()
        model.zero_grad(set_to_none=True)
        self.tr_loss += step_loss
        self.state.global_step += 1
        self.state.epoch = epoch if epoch is not None else self.state.global_step / self.state.max_steps
        self.event("on_step_end")
        bar.update(1)
        self.show_progress(bar, step_loss, learning_rate)
        self.maybe_log_save_evaluate(grad_norm=grad_norm, learning_rate=learning_rate)

    def training_step(self, model, inputs: dict, num_items_in_batch=None, num_micro_batches: int = 1) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns its share of the step's loss."""
        model.train()
        inputs = {k: v.to(self.args.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        with self.autocast():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        if num_items_in_batch is None:
            loss = loss / num_micro_batches
        elif self.world_size > 1 and self.args.average_tokens_across_devices:
            loss = loss * self.world_size  # DDP averages gradients; the count was summed over processes
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach()

    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        labels = inputs.pop("labels") if self.compute_loss_func is not None and "labels" in inputs else None
        if num_items_in_batch is not None and labels is None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        if self.loss_skips_logits and not return_outputs and "labels" in inputs:
            inputs = {**inputs, "skip_logits": True}
        outputs = model(**inputs)
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        else:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs[0]
            if loss is None:
                names = sorted(k for k in inputs if k != "num_items_in_batch")
                raise ValueError(f"{type(unwrap(model)).__name__} returned no loss: the batch has {names} and no "
                                 f"{' / '.join(self.label_names) or 'labels'}. Give the dataset a labels column or "
                                 "use a collator that makes labels (DataCollatorForLanguageModeling(tokenizer, "
                                 "mlm=False) for a causal LM)")
        return (loss, outputs) if return_outputs else loss

    # -- logging, evaluation and saving between steps -------------------------------------------------
    def due(self, strategy: str, every: int, epoch_end: bool) -> bool:
        if strategy == "epoch":
            return epoch_end
        return strategy == "steps" and not epoch_end and every > 0 and self.state.global_step % every == 0

    def maybe_log_save_evaluate(self, grad_norm=None, learning_rate=None, epoch_end: bool = False):
        args, state, control = self.args, self.state, self.control
        at_end = not epoch_end and state.global_step >= state.max_steps
        control.should_log |= self.due(args.logging_strategy, state.logging_steps, epoch_end) or (
            args.logging_first_step and state.global_step == 1 and not epoch_end)
        control.should_evaluate |= self.due(args.eval_strategy, state.eval_steps, epoch_end) or (
            at_end and args.eval_strategy == "steps")
        control.should_save |= self.due(args.save_strategy, state.save_steps, epoch_end) or (
            at_end and args.save_strategy == "steps")
        if control.should_log and state.global_step > self.last_logged_step:
            loss = float(self.all_reduce(self.tr_loss)) / self.world_size
            self.total_loss += loss
            self.tr_loss.zero_()
            logs = {"loss": loss / (state.global_step - self.last_logged_step)}
            if grad_norm is not None:
                logs["grad_norm"] = float(grad_norm)
            logs["learning_rate"] = learning_rate if learning_rate is not None else self.lr_scheduler.get_last_lr()[0]
            self.last_logged_step = state.global_step
            self.log(logs)
        improved = False
        if control.should_evaluate:
            improved = self.update_best(self.evaluate())
        if improved if args.save_strategy == "best" else control.should_save:
            self.save_checkpoint()
        control.should_log = control.should_evaluate = control.should_save = False

    def update_best(self, metrics: dict) -> bool:
        name = self.args.metric_for_best_model
        if name is None:
            return False
        key = f"eval_{name}"
        if key not in metrics:
            raise KeyError(f"metric_for_best_model is {name!r}, but the evaluation returned only {sorted(metrics)}")
        best, value = self.state.best_metric, metrics[key]
        if best is None or (value > best if self.args.greater_is_better else value < best):
            self.state.best_metric, self.state.best_global_step = value, self.state.global_step
            return True
        return False

    def log(self, logs: dict):
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        entry = {**logs, "step": self.state.global_step}
        self.state.log_history.append(entry)
        if self.reports is not None:
            self.reports.write(entry)
        self.event("on_log", logs=logs)

    def show_progress(self, bar, step_loss, learning_rate):
        """Loss, learning rate and tokens/s on the bar, refreshed at most once a second (reading the loss
        waits for the device)."""
        now = time.time()
        if bar.disable or now - getattr(self, "shown_at", 0) < 1:
            return
        seen = self.state.num_input_tokens_seen
        rate = (seen - getattr(self, "shown_tokens", 0)) / max(now - getattr(self, "shown_at", now - 1), 1e-9)
        self.shown_at, self.shown_tokens = now, seen
        bar.set_postfix(loss=f"{float(step_loss):.4f}", lr=f"{learning_rate:.2e}", tok_s=f"{rate:.0f}")

    def finish_training(self, start: float) -> TrainOutput:
        args, state = self.args, self.state
        if state.global_step > self.last_logged_step:
            self.total_loss += float(self.all_reduce(self.tr_loss)) / self.world_size
        steps = state.global_step - self.first_step
        runtime = time.time() - start
        metrics = {"train_runtime": runtime,
                   "train_samples_per_second": steps * args.per_device_train_batch_size * self.world_size
                   * args.gradient_accumulation_steps / runtime,
                   "train_steps_per_second": steps / runtime,
                   "train_loss": self.total_loss / max(steps, 1), "epoch": state.epoch}
        if args.load_best_model_at_end and state.best_model_checkpoint is not None:
            check_checkpoint_model(Path(state.best_model_checkpoint), unwrap(self.model))
            load_model_weights(Path(state.best_model_checkpoint), self.model)
        self.log(dict(metrics))
        self.event("on_train_end")
        if self.reports is not None:
            self.reports.close(state.log_history)
        return TrainOutput(state.global_step, metrics["train_loss"], metrics)

    # -- stop signals ----------------------------------------------------------------------------------
    def catch_stop_signals(self) -> dict:
        """SIGINT/SIGTERM let the current step finish; the run then saves a checkpoint and exits."""
        def stop(signum, frame):
            self.stop_signal = signum

        try:
            return {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: signals cannot be caught here
            return {}

    def stop_requested(self) -> bool:
        """Whether a stop signal reached this process, or (under torchrun) any process: all stop together."""
        if self.world_size > 1:
            flags = self.all_reduce(torch.tensor([self.stop_signal or 0], device=self.args.device), dist.ReduceOp.MAX)
            self.stop_signal = int(flags[0]) or None
        return self.stop_signal is not None

    @staticmethod
    def restore_signal_handlers(previous: dict):
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def stopped_by_signal(self):
        name = signal.Signals(self.stop_signal).name
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if not folder.is_dir():
            folder = self.save_checkpoint()
        if self.args.should_save:
            print(f"\n{name}: stopped after step {self.state.global_step}; checkpoint saved in {folder}. "
                  "Resume with train(resume_from_checkpoint=True)", file=sys.stderr)
        raise SystemExit(128 + self.stop_signal)

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path | None:
        args, state = self.args, self.state
        states = [rng_states()]
        if self.world_size > 1:
            states = [None] * self.world_size
            dist.all_gather_object(states, rng_states())
        folder = None
        if args.should_save:
            step = state.global_step
            target = Path(args.output_dir) / f"checkpoint-{step}"
            if state.best_global_step == step:
                state.best_model_checkpoint = str(target)

            def write(tmp):
                self.save_model_files(tmp)
                if args.save_only_model:
                    state.save_to_json(tmp / STATE_NAME)
                else:
                    save_training_state(tmp, self.optimizer, self.lr_scheduler, self.scaler, state,
                                        args.to_json_string())
                    save_rng_states(tmp, states)

            folder = write_checkpoint(args.output_dir, step, write)
            rotate_checkpoints(args.output_dir, args.save_total_limit, state.best_model_checkpoint)
        if self.world_size > 1:
            dist.barrier()
        self.event("on_save")
        return folder

    def save_model_files(self, folder: Path):
        self.model.save_pretrained(folder)
        if hasattr(self.processing_class, "save_pretrained"):
            self.processing_class.save_pretrained(folder)

    def save_model(self, output_dir=None):
        """The model (the adapter alone for a LoRA model), the tokenizer and the arguments, in output_dir."""
        if not self.args.should_save:
            return
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.save_model_files(folder)
        (folder / ARGS_NAME).write_text(self.args.to_json_string())

    def resume(self, checkpoint) -> dict:
        """Load model, optimizer, scheduler, scaler and state from a checkpoint (True: the last in output_dir);
        return this process's RNG states, set once the loop is about to continue."""
        if checkpoint is True:
            folder = last_checkpoint(self.args.output_dir)
            if folder is None:
                raise ValueError(f"resume_from_checkpoint=True, but {self.args.output_dir} holds no checkpoint")
        else:
            folder = Path(checkpoint)
            if not folder.is_dir():
                raise FileNotFoundError(f"resume_from_checkpoint: {folder} is not a checkpoint folder")
        if not (folder / OPTIMIZER_NAME).is_file():
            raise ValueError(f"{folder} holds no optimizer state (saved with save_only_model=True?), so training "
                             "cannot resume from it; load the model from it instead")
        check_checkpoint_model(folder, unwrap(self.model))
        saved = TrainerState.load_from_json(folder / STATE_NAME)
        if saved.world_size != self.world_size:
            raise ValueError(f"{folder} was written by {saved.world_size} process(es); resume it with the same "
                             f"number (this run has {self.world_size})")
        if saved.max_steps != self.state.max_steps:
            raise ValueError(f"{folder} was written by a run of {saved.max_steps} steps, this one has "
                             f"{self.state.max_steps}: the schedule would differ; keep the arguments of that run")
        load_model_weights(folder, self.model)
        self.state = saved
        return load_training_state(folder, self.optimizer, self.lr_scheduler, self.scaler, self.rank, self.world_size)

    # -- evaluation and prediction ---------------------------------------------------------------------
    def prediction_step(self, model, inputs: dict, prediction_loss_only: bool, ignore_keys=None):
        """(loss or None, predictions or None, labels or None) for one batch."""
        inputs = {k: v.to(self.args.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        labels = [inputs[name] for name in self.label_names if name in inputs]
        has_labels = bool(self.label_names) and len(labels) == len(self.label_names)
        if prediction_loss_only and self.loss_skips_logits and self.compute_loss_func is None and "labels" in inputs:
            inputs = {**inputs, "skip_logits": True}
        with torch.no_grad(), self.autocast():
            outputs = model(**inputs)
        loss = None
        if has_labels:
            loss = self.compute_loss_func(outputs, labels[0]) if self.compute_loss_func else outputs.get("loss")
        if prediction_loss_only:
            return loss, None, None
        skip = set(NOT_PREDICTIONS) | set(ignore_keys or ())
        found = tuple(v for k, v in outputs.items() if k not in skip and torch.is_tensor(v))
        predictions = found[0] if len(found) == 1 else found
        labels = (labels[0] if len(labels) == 1 else tuple(labels)) if has_labels else None
        return loss, predictions, labels

    def evaluation_loop(self, dataset, prefix: str, ignore_keys=None, prediction_loss_only: bool = None):
        model = self.model
        if prediction_loss_only is None:
            prediction_loss_only = self.args.prediction_loss_only
        was_training = model.training
        model.eval()
        loss_sum, examples, scored, all_predictions, all_labels = 0.0, 0, 0, [], []
        start = time.time()
        batches = self.get_eval_dataloader(dataset)
        try:
            for inputs in batches:
                size = len(next(iter(inputs.values())))
                loss, predictions, labels = self.prediction_step(model, inputs, prediction_loss_only, ignore_keys)
                if loss is not None:  # transformers' eval_loss: the batches' mean losses weighted by batch size
                    loss_sum += float(loss) * size
                    scored += size
                examples += size
                if predictions is not None:
                    if self.preprocess_logits_for_metrics is not None:
                        predictions = self.preprocess_logits_for_metrics(predictions, labels)
                    all_predictions.append(as_numpy(predictions))
                if labels is not None:
                    all_labels.append(as_numpy(labels))
                self.event("on_prediction_step")
        finally:
            model.train(was_training)
        predictions = pad_and_concat(all_predictions) if all_predictions else None
        labels = pad_and_concat(all_labels) if all_labels else None
        metrics = {}
        if scored:
            metrics["loss"] = loss_sum / scored
        if self.compute_metrics is not None and predictions is not None and labels is not None:
            metrics.update(self.compute_metrics(EvalPrediction(predictions, labels)))
        runtime = time.time() - start
        metrics.update(runtime=runtime, samples_per_second=examples / runtime,
                       steps_per_second=len(batches) / runtime)
        metrics = {f"{prefix}_{k}" if not k.startswith(f"{prefix}_") else k: v for k, v in metrics.items()}
        return PredictionOutput(predictions, labels, metrics)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        # As transformers: without compute_metrics nothing reads the predictions, so none are gathered.
        metrics = self.evaluation_loop(eval_dataset if eval_dataset is not None else self.eval_dataset,
                                       metric_key_prefix, ignore_keys,
                                       prediction_loss_only=True if self.compute_metrics is None else None).metrics
        self.log(dict(metrics))
        self.event("on_evaluate", metrics=metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test") -> PredictionOutput:
        output = self.evaluation_loop(test_dataset, metric_key_prefix, ignore_keys)
        self.event("on_predict", metrics=output.metrics)
        return output
