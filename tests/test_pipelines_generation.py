"""text-generation against transformers' pipeline; the default models offline (the bundled ones, the
likelihood stand-ins for sentiment and zero-shot, the error for the others); `leanformers pipeline`."""

import json
import os
import subprocess
import sys
import threading

import pytest
import torch
import transformers

from leanformers import pipeline
from leanformers.generation import TextIteratorStreamer
from leanformers.hub import DEFAULT_CHAT_MODEL

PROMPTS = ["Hello there", "The weather today is", "Once upon a time, in a small village by the sea,", "x"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
PREFILLED = [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hel"}]
GREEDY = {"do_sample": False, "max_new_tokens": 12}


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory, smollm2_gguf):
    """A tiny random Llama written by transformers, with SmolLM2's vocabulary, tokenizer and chat template
    (pad == eos, as in SmolLM2)."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=2, initializer_range=0.2)
    folder = tmp_path_factory.mktemp("tiny-chat-llama")
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def both(tiny_chat_model):
    return (transformers.pipeline("text-generation", model=str(tiny_chat_model)),
            pipeline("text-generation", model=str(tiny_chat_model)))


@pytest.mark.parametrize("inputs, kwargs", [
    (PROMPTS[0], {}),
    (PROMPTS, {"batch_size": 3}),
    (CHAT, {}),
    ([CHAT, PREFILLED], {"batch_size": 2}),
    (PREFILLED, {"continue_final_message": False}),
    (PROMPTS[2], {"return_full_text": False}),
    (CHAT, {"return_full_text": False}),
    (PROMPTS[1], {"return_tensors": True}),
    (PROMPTS[1], {"return_text": True, "skip_special_tokens": False}),
    (PROMPTS[1], {"repetition_penalty": 1.5, "no_repeat_ngram_size": 2}),
    (PROMPTS[1], {"num_beams": 3, "num_return_sequences": 2}),
    (PROMPTS[1], {"max_new_tokens": None, "max_length": 9}),
], ids=["string", "strings-batched", "chat", "chats-batched", "prefill-not-continued", "new-text", "chat-new-text",
        "tensors", "text-with-specials", "penalties", "beams", "max-length"])
def test_text_generation_matches_transformers(both, inputs, kwargs):
    ref, ours = both
    kwargs = {k: v for k, v in {**GREEDY, **kwargs}.items() if v is not None}
    assert ours(inputs, **kwargs) == ref(inputs, **kwargs)


def test_stop_strings_match_transformers(both):
    ref, ours = both
    full = ours(PROMPTS[1], **GREEDY, return_full_text=False)[0]["generated_text"]
    stop = full[len(full) // 2:len(full) // 2 + 3]  # a piece that the greedy continuation reaches midway
    stopped = ours(PROMPTS[1], **GREEDY, stop_strings=[stop])
    assert stop in stopped[0]["generated_text"] and len(stopped[0]["generated_text"]) < len(PROMPTS[1] + full)
    # transformers needs its tokenizer passed along for stop_strings; we pass ours to generate() ourselves
    assert stopped == ref(PROMPTS[1], **GREEDY, stop_strings=[stop], tokenizer=ref.tokenizer)
    assert ours(PROMPTS[1], **GREEDY, stop_sequence=stop) == ref(PROMPTS[1], **GREEDY, stop_sequence=stop)


def test_batched_results_equal_unbatched(both):
    _, ours = both
    inputs = PROMPTS + [CHAT, PREFILLED]
    for options in ({}, {"return_tensors": True}):
        one_by_one = ours(inputs, **GREEDY, **options)
        assert ours(inputs, **GREEDY, **options, batch_size=4) == one_by_one
        assert ours(inputs, **GREEDY, **options, batch_size=len(inputs)) == one_by_one


def test_generate_dict_outputs_join_the_records_as_in_transformers(both):
    ref, ours = both
    options = {**GREEDY, "max_new_tokens": 3, "return_dict_in_generate": True, "output_scores": True, "batch_size": 2}
    got, want = ours(PROMPTS[:2], **options), ref(PROMPTS[:2], **options)
    for mine, theirs in zip(got, want, strict=True):
        assert mine[0]["generated_text"] == theirs[0]["generated_text"]
        torch.testing.assert_close(torch.tensor(mine[0]["scores"]), torch.tensor(theirs[0]["scores"]))


def test_generation_settings_sent_to_generate_match_transformers(both):
    """transformers' pipeline defaults (max_new_tokens 256, sampling at temperature 0.7, the tokenizer's pad
    token) fill only what neither the call nor the model's generation config sets."""
    ref, ours = both
    sent = {}

    def spy(name, model):
        real = model.generate

        def generate(*args, **kwargs):
            sent[name] = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
            return real(*args, **{**kwargs, "max_new_tokens": 2, "max_length": None})  # short: only what is sent counts

        return generate

    for call in ({}, {"do_sample": False}, {"max_length": 40}, {"top_k": 0, "top_p": 0.9}, {"temperature": 1.3}):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ref.model, "generate", spy("ref", ref.model))
            patch.setattr(ours.model, "generate", spy("ours", ours.model))
            ref(PROMPTS[0], **call)
            ours(PROMPTS[0], **call)
        assert sent["ours"] == sent["ref"], call


def test_sampling_returns_num_return_sequences_continuations(both):
    _, ours = both
    seeded = {"do_sample": True, "max_new_tokens": 6, "num_return_sequences": 3}
    results = ours(PROMPTS[:2], **seeded, generator=torch.Generator().manual_seed(0), batch_size=2)
    assert [len(records) for records in results] == [3, 3]
    for prompt, records in zip(PROMPTS[:2], results, strict=True):
        assert all(set(r) == {"generated_text"} and r["generated_text"].startswith(prompt) for r in records)
        assert len({r["generated_text"] for r in records}) > 1
    assert ours(PROMPTS[:2], **seeded, generator=torch.Generator().manual_seed(0), batch_size=2) == results
    tensors = ours(PROMPTS[0], **seeded, return_tensors=True)
    prompt_ids = ours.tokenizer(PROMPTS[0])["input_ids"]
    assert all(r["generated_token_ids"][:len(prompt_ids)] == prompt_ids for r in tensors)


def test_a_streamer_receives_the_generated_text(both):
    _, ours = both
    streamer = TextIteratorStreamer(ours.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    result = {}
    worker = threading.Thread(target=lambda: result.update(out=ours(PROMPTS[1], **GREEDY, streamer=streamer,
                                                                     return_full_text=False)))
    worker.start()
    streamed = "".join(streamer)
    worker.join()
    assert streamed == result["out"][0]["generated_text"] and streamed


def test_text_generation_bad_input(both):
    _, ours = both
    with pytest.raises(ValueError, match="the prompt is an empty string"):
        ours("", **GREEDY)
    with pytest.raises(TypeError, match="a string or a chat .* got int"):
        ours([1, 2], **GREEDY)
    with pytest.raises(ValueError, match="`return_text` is mutually exclusive with `return_full_text`"):
        ours(PROMPTS[0], return_text=True, return_full_text=False)
    with pytest.raises(TypeError, match="takes no argument\\(s\\) candidate_labels"):
        ours(PROMPTS[0], candidate_labels=["a"])
    with pytest.raises(ValueError, match="Greedy methods .* do not support `num_return_sequences`"):
        ours(PROMPTS[0], do_sample=False, num_return_sequences=2)
    with pytest.raises(ValueError, match="only supports batch size 1"):
        ours(PROMPTS[:2], **GREEDY, streamer=TextIteratorStreamer(ours.tokenizer), batch_size=2)


# -- defaults offline ---------------------------------------------------------------------------------
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache; the stand-in notices not yet printed."""
    from leanformers import pipelines

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(pipelines, "noticed", set())
    return tmp_path / "hub"


def fake_cached(cache, repo_id):
    snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")


def test_default_models_offline(offline, capsys, monkeypatch):
    from leanformers.pipelines import default_model

    assert default_model("text-generation")[0] == DEFAULT_CHAT_MODEL
    assert default_model("feature-extraction")[0] == "all-minilm-l6-v2"
    with pytest.raises(OSError, match="fill-mask's default model 'distilbert/distilroberta-base' is not available "
                                      "offline.*HF_HUB_OFFLINE is set. Pass model='distilbert/distilroberta-base'"):
        default_model("fill-mask")
    for task in ("sentiment-analysis", "text-classification", "zero-shot-classification", "sentiment-analysis"):
        model, cls_path, auto_name = default_model(task)
        assert (model, cls_path.split(".")[0], auto_name) == (DEFAULT_CHAT_MODEL, "likelihood", "AutoModelForCausalLM")
    notices = capsys.readouterr().err.splitlines()
    assert len(notices) == 2 and all(DEFAULT_CHAT_MODEL in line and "model=" in line for line in notices)
    assert "distilbert/distilbert-base-uncased-finetuned-sst-2-english" in notices[0]
    assert "facebook/bart-large-mnli" in notices[1]

    fake_cached(offline, "distilbert/distilroberta-base")  # in the cache, transformers' default is used
    fake_cached(offline, "facebook/bart-large-mnli")
    assert default_model("fill-mask")[0] == "distilbert/distilroberta-base"
    assert default_model("zero-shot-classification")[1] == "zero_shot_classification.ZeroShotClassificationPipeline"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online, with huggingface_hub installed: downloaded on use
    assert default_model("sentiment-analysis")[0] == "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
    assert capsys.readouterr().err == ""


POSITIVE = ["I love this phone, it works perfectly.", "What a wonderful day at the beach!",
            "The food was delicious and the staff were friendly.", "This is the best movie I have seen all year.",
            "I am so happy with my new bike.", "Great service, I will definitely come back.",
            "The concert was amazing and the crowd was fantastic.", "My kids adore this game, it is so much fun.",
            "Excellent quality, highly recommended.", "She gave a brilliant and inspiring speech.",
            "The hotel room was clean, quiet and comfortable.", "I enjoyed every page of this book.",
            "Thank you so much, you made my day!", "The new update is fast and beautiful.",
            "Our vacation was absolutely perfect.", "This coffee tastes fantastic.",
            "The teacher was kind, patient and helpful.", "I'm thrilled with the results.",
            "A delightful little restaurant with lovely desserts.", "The garden looks gorgeous this spring."]
NEGATIVE = ["I hate this phone, it keeps crashing.", "What a miserable, rainy and awful day.",
            "The food was cold and the staff were rude.", "This is the worst movie I have seen all year.",
            "I am so disappointed with my new bike.", "Terrible service, I will never come back.",
            "The concert was boring and the sound was awful.", "My kids hate this game, it is a waste of money.",
            "Poor quality, it broke after one day.", "He gave a dull and confusing speech.",
            "The hotel room was dirty, noisy and uncomfortable.", "I regret buying this book, it was painful to read.",
            "You ruined my whole evening.", "The new update is slow and ugly.",
            "Our vacation was a complete disaster.", "This coffee tastes horrible.",
            "The teacher was rude and unhelpful.", "I'm furious about the results.",
            "A filthy restaurant with stale desserts.", "The garden looks dead and neglected."]


@pytest.mark.slow
def test_offline_sentiment_default_labels_clear_sentences(offline, capfd):
    classifier = pipeline("sentiment-analysis")
    results = classifier(POSITIVE + NEGATIVE, batch_size=8)
    right = sum(r["label"] == want for r, want in zip(results, ["POSITIVE"] * 20 + ["NEGATIVE"] * 20, strict=True))
    assert right >= 34, f"{right} of 40"
    single = classifier(POSITIVE[0])
    assert isinstance(single, list) and set(single[0]) == {"label", "score"} and 0.5 < single[0]["score"] <= 1
    both_labels = classifier(NEGATIVE[0], top_k=None)
    assert [r["label"] for r in both_labels] == ["NEGATIVE", "POSITIVE"]
    assert sum(r["score"] for r in both_labels) == pytest.approx(1.0)
    pipeline("sentiment-analysis", model=None)  # a second default pipeline: no second notice
    notices = [line for line in capfd.readouterr().err.splitlines() if line.startswith("leanformers:")]
    assert len(notices) == 1 and DEFAULT_CHAT_MODEL in notices[0]


@pytest.mark.slow
def test_offline_zero_shot_default_ranks_obvious_labels(offline):
    classifier = pipeline("zero-shot-classification")
    examples = [("The striker scored twice in the final minutes.", ["politics", "sports", "cooking"], "sports"),
                ("Preheat the oven and whisk the eggs with sugar.", ["cooking", "finance", "sports"], "cooking"),
                ("The senate passed the new tax bill yesterday.", ["sports", "technology", "politics"], "politics"),
                ("Stocks fell sharply after the central bank raised interest rates.", "weather, finance, music",
                 "finance")]
    for sequence, labels, best in examples:
        result = classifier(sequence, labels)
        assert set(result) == {"sequence", "labels", "scores"} and result["sequence"] == sequence
        assert result["labels"][0] == best and sum(result["scores"]) == pytest.approx(1.0)
        assert result["scores"] == sorted(result["scores"], reverse=True)
    several = classifier([e[0] for e in examples[:2]], candidate_labels=["sports", "cooking"], multi_label=True)
    assert [r["labels"][0] for r in several] == ["sports", "cooking"]
    assert all(0 < s < 1 for r in several for s in r["scores"])
    alone = classifier(examples[0][0], candidate_labels="sports")
    assert alone["labels"] == ["sports"] and 0.5 < alone["scores"][0] < 1
    with pytest.raises(ValueError, match="needs candidate_labels"):
        classifier(examples[0][0])
    with pytest.raises(ValueError, match="hypothesis_template='About it.' has no \\{\\}"):
        classifier(examples[0][0], ["a", "b"], hypothesis_template="About it.")


# -- leanformers pipeline -------------------------------------------------------------------------------
def run_cli(*args, stdin="", **env):
    return subprocess.run([sys.executable, "-m", "leanformers.cli", "pipeline", *args], input=stdin,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8", **env})


@pytest.mark.slow
def test_cli_prints_one_json_result_per_input(bert_pipeline_checkpoint, tiny_chat_model):
    folder = bert_pipeline_checkpoint("BertForSequenceClassification", initializer_range=0.3,
                                      id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    texts = ["I loved it.", "Terrible, cold food.", "ok"]
    want = pipeline("text-classification", model=str(folder))(texts, top_k=2, batch_size=8)  # the CLI's batch size
    by_args = run_cli("text-classification", "--model", str(folder), "--top-k", "2", *texts)
    assert by_args.returncode == 0, by_args.stderr
    assert [json.loads(line) for line in by_args.stdout.splitlines()] == want
    by_stdin = run_cli("sentiment-analysis", "--model", str(folder), "--top-k", "2", "-", stdin="\n".join(texts) + "\n")
    assert by_stdin.returncode == 0, by_stdin.stderr
    assert by_stdin.stdout == by_args.stdout

    generated = run_cli("text-generation", "--model", str(tiny_chat_model), "--max-new-tokens", "5",
                        "--temperature", "0", stdin="Hello there\nThe weather today is\n")
    assert generated.returncode == 0, generated.stderr
    want = pipeline("text-generation", model=str(tiny_chat_model))(PROMPTS[:2], max_new_tokens=5, do_sample=False)
    assert [json.loads(line) for line in generated.stdout.splitlines()] == want


@pytest.mark.slow
def test_cli_bad_input_gets_clear_errors(tmp_path, bert_pipeline_checkpoint):
    result = run_cli("sentiment", "hello")
    assert result.returncode == 1 and "unknown task 'sentiment'; leanformers' pipelines are:" in result.stderr
    assert "text-generation" in result.stderr
    result = run_cli("fill-mask", "Paris is the [MASK] of France.", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path))
    assert result.returncode == 1 and "Pass model='distilbert/distilroberta-base'" in result.stderr
    folder = bert_pipeline_checkpoint("BertForSequenceClassification", initializer_range=0.3)
    result = run_cli("text-classification", "--model", str(folder), "--top-k", "0", "fine")
    assert result.returncode == 2 and "--top-k: must be at least 1" in result.stderr
    result = run_cli("text-classification", "--model", str(folder), "--max-new-tokens", "3", "fine")
    assert result.returncode == 1 and "takes no argument(s) max_new_tokens" in result.stderr
    result = run_cli("text-classification", "--model", str(folder), "fine", "")
    assert result.returncode == 1 and "the input is an empty string" in result.stderr
