"""Where code written for transformers would silently do something else (issue 13): each case runs the
same input through transformers and through leanformers and compares what a user sees: the printed
form, the kind of error and the fix its message names, the warning."""

import dataclasses
import json

import pytest
import torch
import transformers
import transformers.modeling_outputs

import leanformers
from leanformers.models import outputs


def output_classes():
    return [c for c in vars(outputs).values()
            if isinstance(c, type) and dataclasses.is_dataclass(c) and issubclass(c, outputs.ModelOutput)]


# -- printing a model's output ---------------------------------------------------------------


@pytest.mark.parametrize("cls", output_classes(), ids=lambda c: c.__name__)
def test_model_output_prints_as_transformers(cls):
    ref_cls = getattr(transformers.modeling_outputs, cls.__name__)
    first, second = (f.name for f in dataclasses.fields(cls)[:2])
    values = {first: torch.tensor([[0.25, -1.5]]), second: torch.tensor([3.0])}
    assert repr(cls(**values)) == repr(ref_cls(**values))
    assert str(cls(**values)) == str(ref_cls(**values))


def test_sequence_classifier_output_of_a_model_prints_as_transformers(bert_pipeline_checkpoint):
    folder = bert_pipeline_checkpoint("BertForSequenceClassification")
    x = {"input_ids": torch.tensor([[101, 2630, 4937, 102]])}
    ref = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ours = leanformers.AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        expected = repr(ref(**x))
        printed = repr(ours(**x))
    assert expected.startswith("SequenceClassifierOutput(loss=None, logits=tensor(")
    assert printed == expected


# -- printing a config -----------------------------------------------------------------------

CONFIGS = [
    ("LlamaConfig", dict(vocab_size=128, hidden_size=64, num_attention_heads=4)),
    ("LlamaConfig", dict(tie_word_embeddings=True, use_cache=False, pad_token_id=0, num_labels=3)),
    ("GPT2Config", dict(n_layer=2)),
    ("GPT2Config", dict(bos_token_id=0, problem_type="regression")),
    ("BertConfig", dict(hidden_size=48, num_attention_heads=4)),
    ("BertConfig", dict(id2label={0: "NEG", 1: "POS"}, label2id={"NEG": 0, "POS": 1}, output_hidden_states=True)),
]


def printed_config(config):
    """The repr without transformers' version line (leanformers has no transformers version to print)."""
    return "\n".join(line for line in repr(config).splitlines() if '"transformers_version"' not in line)


@pytest.mark.parametrize("name,values", CONFIGS)
def test_config_prints_as_transformers(name, values):
    expected = printed_config(getattr(transformers, name)(**values))
    assert '"use_cache": ' in expected and '"eos_token_id": ' in expected  # printed even at their default
    assert printed_config(getattr(leanformers, name)(**values)) == expected


def test_loaded_config_prints_as_transformers(llama_checkpoint, bert_pipeline_checkpoint):
    folders = [llama_checkpoint("tied")[1], bert_pipeline_checkpoint("BertForSequenceClassification", num_labels=3)]
    for folder in folders:
        expected = printed_config(transformers.AutoConfig.from_pretrained(folder))
        assert printed_config(leanformers.AutoConfig.from_pretrained(folder)) == expected


# -- generation settings on a model config -----------------------------------------------------


def raised(fn) -> Exception:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


def test_config_drops_generation_settings_as_transformers():
    values = dict(vocab_size=128, do_sample=True, max_length=50, num_beams=3, use_cache=False)
    ref, ours = transformers.LlamaConfig(**values), leanformers.LlamaConfig(**values)
    for name in ("do_sample", "max_length", "num_beams"):
        assert hasattr(ref, name) is hasattr(ours, name) is False
    assert ours.use_cache is ref.use_cache is False  # a field of the model config, kept


@pytest.mark.parametrize("settings", [{"do_sample": True}, {"max_length": 50, "num_beams": 4}])
def test_generate_refuses_settings_put_on_model_config(llama_checkpoint, settings):
    folder = llama_checkpoint("untied")[1]
    ids = torch.tensor([[1, 5, 6, 7]])
    errors = []
    for library in (transformers, leanformers):
        model = library.AutoModelForCausalLM.from_pretrained(folder)
        model.config.update(settings)
        errors.append(raised(lambda: model.generate(ids)))
        # An explicit generation_config is what transformers reads instead, and it runs.
        assert model.generate(ids, generation_config=library.GenerationConfig(max_new_tokens=2)).shape == (1, 6)
    for error in errors:
        assert isinstance(error, ValueError)
        assert str(settings) in str(error) and "model.generation_config" in str(error)


def test_task_specific_params_applied_by_hand_are_refused(tmp_path):
    values = dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2,
                  task_specific_params={"text-generation": {"do_sample": True, "max_length": 50}})
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**values)).save_pretrained(tmp_path)
    errors = []
    for library in (transformers, leanformers):
        model = library.AutoModelForCausalLM.from_pretrained(tmp_path)
        model.config.update(model.config.task_specific_params["text-generation"])
        errors.append(raised(lambda: model.generate(torch.tensor([[1, 2, 3]]))))
        errors.append(raised(lambda: model.config.save_pretrained(tmp_path / library.__name__)))
    for error in errors:
        assert isinstance(error, ValueError)
        assert "'do_sample': True" in str(error) and "'max_length': 50" in str(error)
        assert "model.generation_config" in str(error)


def test_generation_settings_in_config_json_reach_the_generation_config(llama_checkpoint, tmp_path):
    model = llama_checkpoint("untied")[0]
    model.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "max_length": 7}))
    ids = torch.tensor([[1, 5, 6]])
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    ours = leanformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert ours.generation_config.max_length == ref.generation_config.max_length == 7
    assert not hasattr(ours.config, "max_length") and not hasattr(ref.config, "max_length")
    assert torch.equal(ours.generate(ids), ref.generate(ids))


# -- generate() on a model without a language-model head -----------------------------------------


@pytest.mark.parametrize("auto,family_class", [("AutoModel", "LlamaForCausalLM"),
                                               ("AutoModelForSequenceClassification", "LlamaForCausalLM")])
def test_generate_on_a_model_without_lm_head_names_the_class_to_use(llama_checkpoint, auto, family_class):
    folder = llama_checkpoint("untied")[1]
    ids = torch.tensor([[1, 5, 6]])
    ref = getattr(transformers, auto).from_pretrained(folder)
    assert isinstance(raised(lambda: ref.generate(ids)), AttributeError)
    ours = getattr(leanformers, auto).from_pretrained(folder)
    calls = []
    ours.register_forward_hook(lambda *args: calls.append(1))
    error = raised(lambda: ours.generate(ids))
    assert isinstance(error, AttributeError)
    assert "cannot generate" in str(error) and f"AutoModelForCausalLM ({family_class})" in str(error)
    assert calls == []  # refused before running the model


def test_generate_on_bert_says_to_use_a_decoder(bert_pipeline_checkpoint):
    folder = bert_pipeline_checkpoint("BertForSequenceClassification")
    assert isinstance(raised(lambda: transformers.AutoModel.from_pretrained(folder).generate), AttributeError)
    error = raised(lambda: leanformers.AutoModel.from_pretrained(folder).generate(torch.tensor([[101, 102]])))
    assert isinstance(error, AttributeError) and "decoder checkpoint" in str(error)


# -- a collator fed examples that still hold text ----------------------------------------------


def minilm_tokenizers():
    from leanformers.hub import bundled_model_path

    folder = bundled_model_path("all-minilm-l6-v2")
    return transformers.AutoTokenizer.from_pretrained(folder), leanformers.AutoTokenizer.from_pretrained(folder)


def collated(library, tokenizer, **columns):
    rows = [dict(tokenizer(text), **{k: v[i] for k, v in columns.items()}) for i, text in enumerate(["Blue cat", "a"])]
    return library.DataCollatorWithPadding(tokenizer)(rows)


def test_collator_names_a_text_column_and_the_fix():
    errors = [raised(lambda: collated(library, tokenizer, sentence1=["Blue cat sat", "a dog"], label=[1, 0]))
              for library, tokenizer in zip((transformers, leanformers), minilm_tokenizers(), strict=True)]
    for error in errors:
        assert isinstance(error, ValueError) and "`sentence1`" in str(error)
    assert "remove_columns(['sentence1'])" in str(errors[1]) and "remove_unused_columns" in str(errors[1])


def test_collator_keeps_float_labels_as_transformers():
    ref, ours = (collated(library, tokenizer, label=[0.5, 1.25])
                 for library, tokenizer in zip((transformers, leanformers), minilm_tokenizers(), strict=True))
    assert ref["labels"].dtype == ours["labels"].dtype == torch.float32
    torch.testing.assert_close(ours["labels"], ref["labels"])


# -- a hub name that is not cached, with no network ----------------------------------------------


def no_network(*args, **kwargs):
    """What huggingface_hub raises for a download without network (its connection error as the cause)."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        raise httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")
    except httpx2.ConnectError as err:
        raise LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub") from err


def test_uncached_name_without_network_says_so(tmp_path, monkeypatch):
    import huggingface_hub
    import transformers.utils.hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for module in (huggingface_hub, transformers.utils.hub):
        monkeypatch.setattr(module, "hf_hub_download", no_network)
        monkeypatch.setattr(module, "snapshot_download", no_network)
    ref = raised(lambda: transformers.AutoConfig.from_pretrained("nobody/nothing", cache_dir=tmp_path))
    assert isinstance(ref, OSError)
    assert "couldn't connect" in str(ref)
    error = raised(lambda: leanformers.AutoModelForCausalLM.from_pretrained("nobody/nothing"))
    assert isinstance(error, OSError) and "LocalEntryNotFoundError" not in type(error).__name__
    message = str(error)
    assert "'nobody/nothing' is not a local path" in message and "not in the Hugging Face cache" in message
    assert "downloading it from the Hugging Face Hub failed (ConnectError: " in message
    assert "smollm2-135m-instruct" in message and "HF_HUB_OFFLINE=1" in message


# -- batched generation with right padding ---------------------------------------------------------

RIGHT_PADDING = "right-padding was detected! For correct generation results, please set `padding_side='left'`"


@pytest.mark.parametrize("side", ["right", "left"])
def test_right_padded_batch_warns_at_every_call_as_transformers(llama_checkpoint, caplog, side):
    folder = llama_checkpoint("untied")[1]
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]] if side == "right" else [[5, 6, 7], [0, 8, 9]])
    mask = (ids != 0).long()
    warned = []
    for library in (transformers, leanformers):
        model = library.AutoModelForCausalLM.from_pretrained(folder)
        for _ in range(2):
            caplog.clear()
            # at the logger's own level: other tests quieten transformers' (set_verbosity_error)
            with caplog.at_level("WARNING", logger=library.__name__):
                model.generate(ids, attention_mask=mask, max_new_tokens=2)
            warned.append([r.getMessage() for r in caplog.records if RIGHT_PADDING in r.getMessage()])
    assert warned[:2] == warned[2:]  # leanformers' two calls log what transformers' two calls log
    assert all(len(messages) == (side == "right") for messages in warned)
