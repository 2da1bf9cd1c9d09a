"""`leanformers train`, run as a user runs it: a tiny GPT-2 from scratch on a text file, LoRA on
prompt/completion JSONL, and what the output folder loads as in transformers and peft."""

import json
import random

import pytest
import torch
import transformers

from test_cli import run_cli

pytestmark = pytest.mark.slow

WORDS = ("the cat sat on a mat while the dog ran to the park and a bird sang in the tree near the house "
         "where the children played with a red ball").split()


@pytest.fixture(scope="module")
def smollm2_tokenizer_folder(smollm2_gguf, tmp_path_factory):
    """SmolLM2's tokenizer as transformers writes it (the models below get random weights)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name).save_pretrained(folder)
    return folder


def model_folder(tmp_path, tokenizer_folder, config, weights: bool):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    if weights:
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    for path in tokenizer_folder.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_train_gpt2_from_scratch_lowers_validation_loss(smollm2_tokenizer_folder, tmp_path):
    config = transformers.GPT2Config(vocab_size=49152, n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=1, eos_token_id=2)
    folder = model_folder(tmp_path, smollm2_tokenizer_folder, config, weights=False)
    rng = random.Random(0)
    text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(160))
    (tmp_path / "train.txt").write_text(text)
    out = tmp_path / "out"
    result = run_cli("train", "--model", str(folder), "--from-scratch", "--data", str(tmp_path / "train.txt"),
                     "--format", "text", "--max-length", "32", "--epochs", "3", "--lr", "3e-3", "--batch-size", "8",
                     "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    evals = [e["eval_loss"] for e in log if "eval_loss" in e]
    assert len(evals) == 3 and evals[0] > evals[1] > evals[2], evals
    assert f"eval loss {evals[0]:.4f} -> {evals[1]:.4f} -> {evals[2]:.4f}" in result.stdout
    assert "train" in result.stderr and "tok_s" in result.stderr  # the progress bar
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    from leanformers import AutoModelForCausalLM

    ours = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[5, 17, 300, 4000, 12]])
    torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, atol=1e-4, rtol=0)
    assert theirs.config.n_layer == 2 and transformers.AutoTokenizer.from_pretrained(out)("the cat").input_ids


def prompt_completion_file(path, count=16):
    rows = [{"prompt": f"Q: what is {i} plus one?\nA:", "completion": f" {i + 1}"} for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def tiny_llama(smollm2_tokenizer_folder, tmp_path):
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    return model_folder(tmp_path, smollm2_tokenizer_folder, config, weights=True)


def test_train_lora_merged_and_adapter_outputs_load_in_transformers_and_peft(tiny_llama, tmp_path):
    import peft

    data = prompt_completion_file(tmp_path / "train.jsonl")
    common = ["train", "--model", str(tiny_llama), "--data", str(data), "--format", "prompt-completion", "--lora",
              "--max-steps", "4", "--lr", "1e-2", "--batch-size", "4", "--lora-targets", "q_proj,v_proj"]
    merged = run_cli(*common, "--output-dir", str(tmp_path / "merged"))
    assert merged.returncode == 0, merged.stderr[-3000:]
    adapter = run_cli(*common, "--save-adapter", "--output-dir", str(tmp_path / "adapter"))
    assert adapter.returncode == 0, adapter.stderr[-3000:]
    assert not (tmp_path / "adapter" / "model.safetensors").exists()
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = torch.tensor([[5, 17, 300, 4000, 12]])
    with torch.no_grad():
        untrained = base(ids).logits
        expected = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()(ids).logits
        merged_logits = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(ids).logits
    assert not torch.allclose(expected, untrained, atol=1e-4)  # the adapter changed the model
    torch.testing.assert_close(merged_logits, expected, atol=1e-4, rtol=0)


def test_train_resume_continues_from_the_last_checkpoint(tiny_llama, tmp_path):
    data = prompt_completion_file(tmp_path / "train.jsonl")
    common = ["train", "--model", str(tiny_llama), "--data", str(data), "--format", "prompt-completion",
              "--batch-size", "4", "--save-steps", "2", "--logging-steps", "1", "--output-dir", str(tmp_path / "out")]
    first = run_cli(*common, "--max-steps", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli(*common, "--max-steps", "4", "--resume")
    assert again.returncode == 0 and "trained 4 steps" in again.stdout, again.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "out" / "trainer_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3, 4]


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a", "completion": " b"}', "[1, 2]"], "line 2: expected a JSON object per line, got list"),
    (['{"prompt": "a", "completion": " b"}', "", '{"prompt": "c", "completion": "  "}'],
     "line 3: the completion is empty"),
    (['{"prompt": "a"}'], "line 1: --format prompt-completion needs a string 'completion', got None"),
])
def test_train_bad_jsonl_names_the_line(tiny_llama, tmp_path, lines, message):
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    result = run_cli("train", "--model", str(tiny_llama), "--data", str(data), "--format", "prompt-completion",
                     "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def test_train_bad_arguments(tiny_llama, tmp_path):
    data = prompt_completion_file(tmp_path / "train.jsonl")
    result = run_cli("train", "--model", str(tiny_llama), "--data", str(data), "--format", "prompt-completion",
                     "--save-adapter")
    assert result.returncode == 1 and "--save-adapter saves a LoRA adapter: add --lora" in result.stderr
    result = run_cli("train", "--model", str(tiny_llama), "--data", str(tmp_path / "missing.txt"))
    assert result.returncode == 1 and "missing.txt does not exist" in result.stderr
    result = run_cli("train", "--model", str(tiny_llama), "--data", str(data), "--format", "messages")
    assert result.returncode == 1 and "--format messages needs messages in every line; the file has prompt, " \
        "completion" in result.stderr
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = run_cli("train", "--model", str(tiny_llama), "--data", str(data), "--format", "messages")
    assert result.returncode == 1 and "line 1: the conversation has no assistant message" in result.stderr
