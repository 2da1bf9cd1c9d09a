"""The `leanformers` command, run as a user runs it, against transformers doing the same by hand."""

import os
import subprocess
import sys

import pytest
import torch
import transformers

pytestmark = pytest.mark.slow


def run_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "leanformers.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def greedy_reply(ref, tokenizer, messages, max_new_tokens):
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False)
    out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_chat_reads_one_message_per_line_and_keeps_the_conversation(smollm2_pair, smollm2_gguf):
    from leanformers import AutoTokenizer

    ref, _ = smollm2_pair
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf)
    result = run_cli("chat", "--temperature", "0", "--max-new-tokens", "20", "--system", "Be brief.",
                     stdin="What is the capital of France?\nAnd of Italy?\n")
    assert result.returncode == 0, result.stderr
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
    first = greedy_reply(ref, tokenizer, messages, 20)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "And of Italy?"}]
    second = greedy_reply(ref, tokenizer, messages, 20)
    assert result.stdout == first + "\n" + second + "\n"


def test_generate_prints_prompt_and_greedy_continuation(smollm2_pair, smollm2_gguf):
    from leanformers import AutoTokenizer

    ref, _ = smollm2_pair
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf)
    prompt = "The three primary colors are"
    result = run_cli("generate", "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "24")
    assert result.returncode == 0, result.stderr
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    assert result.stdout == prompt + tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) + "\n"


def test_convert_writes_a_folder_transformers_loads(smollm2_pair, smollm2_gguf, tmp_path):
    ref, _ = smollm2_pair
    result = run_cli("convert", str(smollm2_gguf), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}
    assert expected <= {p.name for p in out.iterdir()}
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "In 2024, 365 days and 12 months."
    ids = torch.tensor([tokenizer(text).input_ids])
    assert tokenizer.tokenize("365") == ["3", "6", "5"]  # SmolLM2 splits every digit
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template


def test_bad_arguments_get_clear_errors(tmp_path):
    result = run_cli("convert", str(tmp_path / "missing.gguf"), str(tmp_path / "out"))
    assert result.returncode != 0 and "missing.gguf is not a .gguf file" in result.stderr
    assert not (tmp_path / "out").exists()
    result = run_cli("generate", "--prompt", "x", "--max-new-tokens", "0")
    assert result.returncode != 0 and "--max-new-tokens must be at least 1" in result.stderr
    result = run_cli("generate", "--prompt", "x", "--model", str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "nowhere does not exist" in result.stderr
