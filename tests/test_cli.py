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


@pytest.mark.parametrize("weights", ["quantized", "dequantized"])
def test_generate_prints_prompt_and_greedy_continuation(smollm2_pair, smollm2_gguf, weights):
    """The GGUF's weights stay in their Q4_1/Q8_0 blocks unless --dequantize: the same greedy text either way."""
    from leanformers import AutoTokenizer

    ref, _ = smollm2_pair
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf)
    prompt = "The three primary colors are"
    flags = ["--dequantize"] if weights == "dequantized" else []
    result = run_cli("generate", "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "24", *flags)
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


def printed_loss(result) -> tuple[float, float, int]:
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    return float(words[words.index("loss") + 1]), float(words[words.index("perplexity") + 1]), int(words[5].lstrip("("))


def oracle_mean_loss(ref, rows) -> tuple[float, int]:
    """transformers' model over (input_ids, labels) rows, one at a time: token-weighted mean loss."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            n = sum(1 for label in labels[1:] if label != -100)
            loss = ref(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
            total += loss.item() * n
            count += n
    return total / count, count


@pytest.mark.parametrize("max_length", [10, 512])  # several blocks, the last shorter; one short block
def test_eval_text_file_loss_and_perplexity_match_transformers(smollm2_pair, smollm2_gguf, tmp_path, max_length):
    ref, _ = smollm2_pair
    lines = ["The cat sat on the mat.", "", "Water boils at one hundred degrees Celsius at sea level.",
             "Paris is the capital of France, and Rome is the capital of Italy."]
    (tmp_path / "eval.txt").write_text("\n".join(lines) + "\n")
    loss, perplexity, tokens = printed_loss(run_cli("eval", "--data", str(tmp_path / "eval.txt"), "--max-length",
                                                    str(max_length), "--batch-size", "2"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    stream = []
    for line in lines:
        if line:
            stream += tokenizer(line, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert len(stream) % max_length  # the last block is shorter than the others
    blocks = [stream[i:i + max_length] for i in range(0, len(stream), max_length)]
    expected, count = oracle_mean_loss(ref, [(b, b) for b in blocks if len(b) > 1])
    assert tokens == count == len(stream) - len(blocks)
    assert loss == pytest.approx(expected, abs=2e-4)
    assert perplexity == pytest.approx(torch.tensor(expected).exp().item(), rel=1e-3)


def test_eval_prompt_completion_scores_only_the_completions_like_transformers(smollm2_pair, smollm2_gguf, tmp_path):
    import json

    ref, _ = smollm2_pair
    examples = [{"prompt": "What is the capital of France?", "completion": " Paris."},
                {"prompt": "Two plus two is", "completion": " four, as everyone knows."}]
    (tmp_path / "pc.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    loss, _, tokens = printed_loss(run_cli("eval", "--data", str(tmp_path / "pc.jsonl"), "--format", "prompt-completion"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    rows = []
    for e in examples:
        prompt = tokenizer(e["prompt"])["input_ids"]
        completion = tokenizer(e["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt + completion, [-100] * len(prompt) + completion))
    expected, count = oracle_mean_loss(ref, rows)
    assert tokens == count == sum(len(labels) - labels.count(-100) for _, labels in rows)
    assert loss == pytest.approx(expected, abs=2e-4)


def test_eval_bad_input_is_a_clear_error(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": " b"}\n[1, 2]\n')
    result = run_cli("eval", "--data", str(tmp_path / "bad.jsonl"), "--format", "prompt-completion")
    assert result.returncode == 1 and "bad.jsonl, line 2: expected a JSON object per line, got list" in result.stderr
    (tmp_path / "pc.jsonl").write_text('{"prompt": "a", "completion": " b"}\n')
    result = run_cli("eval", "--data", str(tmp_path / "pc.jsonl"), "--format", "messages")
    assert result.returncode == 1 and "--format messages needs messages in every line; the file has prompt, completion" \
        in result.stderr
    result = run_cli("eval", "--data", str(tmp_path / "missing.txt"))
    assert result.returncode == 1 and "missing.txt does not exist" in result.stderr
    result = run_cli("eval", "--data", str(tmp_path / "pc.jsonl"), "--max-length", "0")
    assert result.returncode == 2 and "--max-length: must be at least 1, got 0" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "pc.jsonl"]  # nothing written


def test_serve_names_the_extra_to_install_when_fastapi_is_missing(monkeypatch):
    import importlib.util

    from leanformers import cli

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "fastapi" else find_spec(name, *args))
    with pytest.raises(SystemExit, match=r"needs fastapi: pip install 'leanformers\[serve\]'"):
        cli.main(["serve", "--port", "0"])
