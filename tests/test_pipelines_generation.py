"""text-generation against transformers' pipeline."""

import threading

import pytest
import torch
import transformers

from leanformers import pipeline
from leanformers.generation import TextIteratorStreamer

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
    for mine, theirs in zip(got, want):
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
    for prompt, records in zip(PROMPTS, results):
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
