"""Pipelines: wall time of each task over 64 inputs at batch_size=8, leanformers' pipeline vs transformers'
on the same checkpoint, interleaved in one run.

    .venv/bin/python benchmarks/pipelines.py [--inputs 64] [--batch-size 8] [--repeats 3] [--tasks a,b]

The tasks are those in leanformers' TASKS registry that have an input maker in INPUTS below (a task merged
later needs only its line there). Checkpoints go to a temporary folder so that both libraries load the same
files: SmolLM2-135M-Instruct (the packaged GGUF, dequantized to fp32) for text-generation, greedy, a few
new tokens; all-MiniLM-L6-v2 (packaged) under the task's Auto class, saved by transformers, for the
encoder tasks (heads the checkpoint lacks start random: the timing does not depend on them). Prints per
task the best of --repeats for each library, the ratio leanformers / transformers (lower is faster) and
whether the results agree (floats within 1e-3). Absolute numbers on a shared machine are
noise; the ratios from the same run are the figures to compare.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers

from leanformers import AutoModelForCausalLM, AutoTokenizer, pipeline
from leanformers.hub import bundled_model_path
from leanformers.pipelines import TASKS
from machine import cpu_description

SENTENCES = ["The film was a delight from start to finish.", "Our flight was delayed for six hours again.",
             "Paris is the capital of France and its largest city.", "The new phone has a brighter screen.",
             "She scored twice in the second half of the final.", "Whisk the eggs with sugar until pale.",
             "Interest rates rose for the third time this year.", "The museum opens at nine on weekdays."]


def sentences(n: int) -> list[str]:
    # Varied lengths, so batches need padding as real inputs do.
    return [" ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(1 + i % 3)) for i in range(n)]


# task -> (inputs for n, call arguments)
INPUTS = {
    "text-classification": (sentences, {}),
    "feature-extraction": (sentences, {}),
    "fill-mask": (lambda n: [s + " It was a [MASK] day." for s in sentences(n)], {}),
    "zero-shot-classification": (sentences, {"candidate_labels": ["sports", "travel", "food", "finance"]}),
    "token-classification": (sentences, {}),
    "text-generation": (sentences, {"max_new_tokens": 8, "do_sample": False}),
}
# Encoder heads whose config must name labels for the pipeline to run.
HEAD_CONFIG = {"zero-shot-classification": {"id2label": {0: "contradiction", 1: "neutral", 2: "entailment"},
                                            "label2id": {"contradiction": 0, "neutral": 1, "entailment": 2}}}


def write_checkpoint(task: str, folder: Path) -> Path:
    if task == "text-generation":
        # What `leanformers convert` writes; transformers loads it with the same logits (tests/test_cli.py).
        # transformers refuses to save a model it loaded from GGUF.
        gguf = bundled_model_path("smollm2-135m-instruct")
        AutoModelForCausalLM.from_pretrained(gguf).save_pretrained(folder)
        AutoTokenizer.from_pretrained(gguf).save_pretrained(folder)
        return folder
    minilm = bundled_model_path("all-minilm-l6-v2")
    auto_class = getattr(transformers, TASKS[task][1])
    auto_class.from_pretrained(minilm, **HEAD_CONFIG.get(task, {})).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
    return folder


def agree(ours, theirs, atol=1e-3) -> bool:
    """Same structure and values, floats within atol (tensors and arrays compared as lists)."""
    ours, theirs = (v.tolist() if hasattr(v, "tolist") else v for v in (ours, theirs))
    if isinstance(theirs, float):
        return isinstance(ours, (float, int)) and abs(ours - theirs) <= atol
    if isinstance(theirs, dict):
        return isinstance(ours, dict) and ours.keys() == theirs.keys() and all(agree(ours[k], theirs[k])
                                                                               for k in theirs)
    if isinstance(theirs, (list, tuple)):
        return isinstance(ours, (list, tuple)) and len(ours) == len(theirs) and all(map(agree, ours, theirs))
    return ours == theirs


def timed(pipe, inputs, batch_size, kwargs):
    start = time.perf_counter()
    with torch.inference_mode():
        results = pipe(inputs, batch_size=batch_size, **kwargs)
    return time.perf_counter() - start, results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default=None, help="comma-separated (default: every registered task)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()  # its load reports for the heads MiniLM lacks
    transformers.utils.logging.disable_progress_bar()
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    print(cpu_description())
    print(f"{args.inputs} inputs, batch_size={args.batch_size}, best of {args.repeats}")
    print(f"{'task':<26} {'leanformers s':>13} {'transformers s':>15} {'ratio':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for task in tasks:
            if task not in INPUTS:
                print(f"{task:<26} skipped: no input maker in benchmarks/pipelines.py")
                continue
            make_inputs, kwargs = INPUTS[task]
            folder = write_checkpoint(task, Path(tmp) / task)
            try:
                theirs = transformers.pipeline(task, model=str(folder))
            except KeyError as err:  # transformers 5 dropped some tasks (question-answering)
                print(f"{task:<26} skipped: {err.args[0]}")
                continue
            pipes = {"leanformers": pipeline(task, model=str(folder)), "transformers": theirs}
            inputs = make_inputs(args.inputs)
            best, results = {}, {}
            for name, pipe in pipes.items():  # warm-up, and the results to compare
                _, results[name] = timed(pipe, inputs[: args.batch_size], args.batch_size, kwargs)
            for _ in range(args.repeats):
                for name, pipe in pipes.items():  # interleaved, so a busy moment on the machine hits both
                    seconds, results[name] = timed(pipe, inputs, args.batch_size, kwargs)
                    best[name] = min(best.get(name, seconds), seconds)
            same = "same results" if agree(results["leanformers"], results["transformers"]) else "results differ"
            ratio = best["leanformers"] / best["transformers"]
            print(f"{task:<26} {best['leanformers']:>13.2f} {best['transformers']:>15.2f} {ratio:>6.2f}x  {same}",
                  flush=True)


if __name__ == "__main__":
    main()
