"""Fine-tuning recipes: blocks, prompt-masked completions, assistant-only chat labels, packing."""

import json
import random

import pytest
import torch

from leanformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, load_dataset
from leanformers.data import (DataCollatorForPacking, chat_dataset, lm_blocks, pack_examples,
                              prompt_completion_dataset, tokenize_messages, tokenize_prompt_completion)


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained("smollm2-135m-instruct")


WORDS = ["alpha", "beta", " gamma", "delta!", "épsilon", "zeta\n", "42", " ", "?", "東京", "the", "end."]


def random_text(rng, n):
    return "".join(rng.choice(WORDS) + rng.choice(["", " "]) for _ in range(n))


def trained(ids, labels):
    return [i for i, l in zip(ids, labels, strict=True) if l != -100]


def test_completion_labels_decode_to_completion_plus_eos(tok):
    rng = random.Random(0)
    for _ in range(200):
        example = {"prompt": random_text(rng, rng.randint(1, 12)), "completion": random_text(rng, rng.randint(1, 12))}
        out = tokenize_prompt_completion(example, tok)
        assert len(out["input_ids"]) == len(out["labels"]) == len(out["attention_mask"])
        assert tok.decode(trained(out["input_ids"], out["labels"])) == example["completion"] + tok.eos_token
        assert tok.decode(out["input_ids"]) == example["prompt"] + example["completion"] + tok.eos_token
        assert [l for l in out["labels"] if l != -100] == trained(out["input_ids"], out["labels"])


def test_prompt_loss_weight_and_dataset_recipe(tok, tmp_path):
    out = tokenize_prompt_completion({"prompt": "Q: hi", "completion": " A: yo"}, tok, prompt_loss_weight=0.1)
    assert out["labels"] == out["input_ids"]
    n_prompt = len(tok("Q: hi")["input_ids"])
    assert out["loss_weights"] == [0.1] * n_prompt + [1.0] * (len(out["input_ids"]) - n_prompt)
    path = tmp_path / "pc.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Q{i}:", "completion": f" A{i}"}) + "\n" for i in range(5)))
    ds = prompt_completion_dataset(load_dataset("json", data_files=str(path), split="train"), tok)
    assert ds.column_names == ["input_ids", "attention_mask", "labels"]
    assert tok.decode(trained(ds[3]["input_ids"], ds[3]["labels"])) == " A3" + tok.eos_token


def random_conversation(rng):
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": random_text(rng, 4)})
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": random_text(rng, rng.randint(1, 8))})
        messages.append({"role": "assistant", "content": random_text(rng, rng.randint(1, 8)).strip() or "ok",
                         "weight": rng.choice([0, 1, 1])})
    return messages


def test_assistant_labels_decode_to_exactly_the_assistant_messages(tok):
    rng = random.Random(1)
    for _ in range(60):
        messages = random_conversation(rng)
        out = tokenize_messages({"messages": messages}, tok)
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        assert tok.decode(out["input_ids"]) == tok.apply_chat_template(plain, tokenize=False)
        # the trained spans, one per weighted assistant message, in order
        spans, current = [], []
        for i, l in zip(out["input_ids"], out["labels"], strict=True):
            if l != -100:
                current.append(i)
            elif current:
                spans.append(current)
                current = []
        if current:
            spans.append(current)
        expected = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant" and m["weight"] == 1]
        assert [tok.decode(s) for s in spans] == expected


def test_chat_recipe_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="no assistant message"):
        tokenize_messages({"messages": [{"role": "user", "content": "hi"}]}, tok)
    with pytest.raises(ValueError, match=r"messages\[1\] has unknown role 'robot'"):
        tokenize_messages({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"},
                                        {"role": "assistant", "content": "y"}]}, tok)
    with pytest.raises(ValueError, match="weight 0.5"):
        tokenize_messages([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}],
                          tok)
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "2+2?"},
                                             {"role": "assistant", "content": "4"}]}) + "\n")
    ds = chat_dataset(load_dataset("json", data_files=str(path), split="train"), tok)
    assert tok.decode(trained(ds[0]["input_ids"], ds[0]["labels"])) == "4<|im_end|>"


def test_lm_blocks_recipe(tok, tmp_path):
    path = tmp_path / "corpus.txt"
    docs = [random_text(random.Random(i), 30) .replace("\n", " ") for i in range(40)]
    path.write_text("\n".join(docs) + "\n\n")
    splits = lm_blocks(load_dataset("text", data_files=str(path)), tok, block_size=32, validation_size=0.1)
    assert sorted(splits) == ["train", "validation"]
    rows = splits["train"]["input_ids"] + splits["validation"]["input_ids"]
    assert all(len(r) == 32 for r in rows)
    stream = []
    for doc in docs:
        stream += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(rows) == len(stream) // 32
    assert sorted(rows) == sorted(stream[i:i + 32] for i in range(0, len(stream) // 32 * 32, 32))
    assert splits["train"][0]["labels"] == splits["train"][0]["input_ids"]


def test_packed_logits_equal_each_example_alone():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    rng = random.Random(0)
    examples = [{"input_ids": [rng.randrange(1, 96) for _ in range(n)]} for n in (5, 9, 3, 12, 7, 4)]
    packed = pack_examples(examples, block_size=20, pad_token_id=0)
    batch = DataCollatorForPacking()([{k: v[i] for k, v in packed.items()} for i in range(len(packed["input_ids"]))])
    assert batch["attention_mask"].shape == (len(packed["input_ids"]), 1, 20, 20)
    assert batch["attention_mask"].dtype == torch.bool
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch["position_ids"]).logits
        seen = 0
        for b, seqs in enumerate(packed["sequence_ids"]):
            for s in sorted(set(seqs) - {-1}):
                positions = [t for t, x in enumerate(seqs) if x == s]
                ids = [packed["input_ids"][b][t] for t in positions]
                alone = model(input_ids=torch.tensor([ids])).logits[0]
                torch.testing.assert_close(logits[b, positions], alone, atol=1e-5, rtol=1e-4)
                assert packed["labels"][b][positions[0]] == -100
                assert packed["labels"][b][positions[1]] == ids[1]
                seen += 1
    assert seen == len(examples)
    assert len(packed["input_ids"]) < len(examples)  # examples really share blocks
    with pytest.raises(ValueError, match="more than block_size"):
        pack_examples([{"input_ids": list(range(30))}], block_size=20)
