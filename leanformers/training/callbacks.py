"""What the Trainer knows of a run (TrainerState), what callbacks may ask of it (TrainerControl), and
the callbacks: TrainerCallback's hooks under transformers' names, and EarlyStoppingCallback."""

import dataclasses
import json
from dataclasses import dataclass, field

from ..files import read_json, write_atomic


@dataclass
class TrainerState:
    """transformers' TrainerState fields; saved in every checkpoint as trainer_state.json."""
    epoch: float | None = None
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list = field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    world_size: int = 1
    model_class: str | None = None  # refuses a resume into another model
    epoch_index: int = 0  # where the data stands (the epoch, micro-batches of it trained on): resume goes on there
    batches_in_epoch: int = 0

    def save_to_json(self, path):
        write_atomic(path, (json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def load_from_json(cls, path):
        saved = read_json(path)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in known})


@dataclass
class TrainerControl:
    """Flags a callback sets to change the run; the Trainer resets each after acting on it."""
    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False


class TrainerCallback:
    """Override any hook; each gets (args, state, control, **kwargs) with model, optimizer, lr_scheduler,
    train_dataloader, processing_class, and metrics (on_evaluate) or logs (on_log), and may return a control."""

    def on_init_end(self, args, state, control, **kwargs): pass
    def on_train_begin(self, args, state, control, **kwargs): pass
    def on_train_end(self, args, state, control, **kwargs): pass
    def on_epoch_begin(self, args, state, control, **kwargs): pass
    def on_epoch_end(self, args, state, control, **kwargs): pass
    def on_step_begin(self, args, state, control, **kwargs): pass
    def on_substep_end(self, args, state, control, **kwargs): pass
    def on_pre_optimizer_step(self, args, state, control, **kwargs): pass
    def on_optimizer_step(self, args, state, control, **kwargs): pass
    def on_step_end(self, args, state, control, **kwargs): pass
    def on_evaluate(self, args, state, control, **kwargs): pass
    def on_predict(self, args, state, control, **kwargs): pass
    def on_save(self, args, state, control, **kwargs): pass
    def on_log(self, args, state, control, **kwargs): pass
    def on_prediction_step(self, args, state, control, **kwargs): pass


class CallbackHandler:
    """Calls one hook on every callback in order; a callback that returns a control replaces it."""

    def __init__(self, callbacks, **objects):
        self.callbacks = []
        for callback in callbacks:
            self.add_callback(callback)
        self.objects = objects  # model, optimizer, ... handed to every hook

    def add_callback(self, callback):
        callback = callback() if isinstance(callback, type) else callback
        if not isinstance(callback, TrainerCallback):
            raise TypeError(f"callbacks must be TrainerCallback instances or classes, got {type(callback).__name__}")
        self.callbacks.append(callback)

    def remove_callback(self, callback):
        self.callbacks = [c for c in self.callbacks if c is not callback and type(c) is not callback]

    def call(self, event: str, args, state, control, **kwargs):
        for callback in self.callbacks:
            result = getattr(callback, event)(args, state, control, **self.objects, **kwargs)
            if result is not None:
                control = result
        return control


class EarlyStoppingCallback(TrainerCallback):
    """Stop when metric_for_best_model has not improved by more than early_stopping_threshold for
    early_stopping_patience evaluations in a row."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0):
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold
        self.early_stopping_patience_counter = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if args.metric_for_best_model is None:
            raise ValueError("EarlyStoppingCallback needs metric_for_best_model (or load_best_model_at_end=True, "
                             "which defaults it to the eval loss)")
        if args.eval_strategy == "no":
            raise ValueError("EarlyStoppingCallback needs evaluations: set eval_strategy to 'steps' or 'epoch'")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        key = f"eval_{args.metric_for_best_model}"
        if metrics is None or key not in metrics:
            raise KeyError(f"EarlyStoppingCallback watches {key!r}, which the evaluation did not return "
                           f"(it returned {sorted(metrics or {})})")
        value = metrics[key]
        better = (value > state.best_metric + self.early_stopping_threshold if args.greater_is_better
                  else value < state.best_metric - self.early_stopping_threshold) if state.best_metric is not None else True
        self.early_stopping_patience_counter = 0 if better else self.early_stopping_patience_counter + 1
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True
