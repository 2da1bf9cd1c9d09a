"""Where a run's logs go, on the process that writes them: JSON lines in output_dir (trainer_log.jsonl),
TensorBoard when report_to asks for it, and the loss-curve PNG at the end when matplotlib is installed."""

import json
from pathlib import Path

LOG_NAME = "trainer_log.jsonl"
PLOT_NAME = "loss_curve.png"


class RunReports:
    def __init__(self, output_dir, report_to: list, logging_dir=None):
        self.folder = Path(output_dir)
        self.tensorboard = None
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(logging_dir or str(self.folder / "runs"))

    def restart(self, log_history: list):
        """The JSON-lines log restarts from the state's history, so a resumed run's log has no step twice."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / LOG_NAME).write_text("".join(json.dumps(entry) + "\n" for entry in log_history))

    def write(self, entry: dict):
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOG_NAME, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if self.tensorboard is not None:
            for key, value in entry.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tensorboard.add_scalar(key if key.startswith("eval_") else f"train/{key}", value,
                                                entry["step"])

    def close(self, log_history: list):
        plot_losses(log_history, self.folder / PLOT_NAME)
        if self.tensorboard is not None:
            self.tensorboard.close()


def plot_losses(log_history: list, path: Path):
    """Train and eval loss by step, as a PNG; nothing without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    from matplotlib import pyplot

    curves = {label: [(e["step"], e[key]) for e in log_history if key in e]
              for key, label in (("loss", "train"), ("eval_loss", "eval"))}
    if not any(curves.values()):  # nothing was logged (logging_steps beyond the run): no plot to draw
        return
    figure, axes = pyplot.subplots(figsize=(7, 4))
    for label, points in curves.items():
        if points:
            axes.plot(*zip(*points, strict=True), marker="." if label == "eval" else None, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    pyplot.close(figure)
