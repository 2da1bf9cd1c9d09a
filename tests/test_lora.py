"""LoRA against PEFT: our adapter loaded by `peft` over the transformers model gives our logits, PEFT's
adapter loads over ours, only the adapters train, merging keeps the logits, decoding through the cache
with unmerged adapters follows the full forward, and bad adapters are refused clearly."""

import copy
import json

import peft
import pytest
import torch
import transformers

from leanformers import LlamaForCausalLM, LoraConfig, PeftModel, get_peft_model


def random_ids(batch, length, vocab=128, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def with_trained_adapters(model, seed=0):
    """Non-zero lora_B weights, as after training (a fresh adapter is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


@pytest.fixture
def adapted(llama_checkpoint):
    ref, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")
    return ref, folder, with_trained_adapters(get_peft_model(model, config))


def test_lora_adapter_loads_in_peft_over_transformers_with_our_logits(adapted, tmp_path):
    ref, folder, ours = adapted
    ours.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    theirs = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(folder), tmp_path).eval()
    ids = random_ids(2, 9, seed=1)
    with torch.no_grad():
        expected = theirs(input_ids=ids).logits
        plain = ref(input_ids=ids).logits
        got = ours.eval()(input_ids=ids).logits
    assert not torch.allclose(expected, plain, atol=1e-3)  # the adapters really change the logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_peft_adapter_loads_over_leanformers(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("gqa")
    torch.manual_seed(3)
    base = transformers.AutoModelForCausalLM.from_pretrained(folder)
    theirs = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["k_proj", "o_proj"]))
    with_trained_adapters(theirs, seed=4).save_pretrained(tmp_path)
    ours = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder), tmp_path).eval()
    ids = random_ids(2, 7, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, theirs.eval()(input_ids=ids).logits, atol=1e-4, rtol=0)
    assert not any(p.requires_grad for p in ours.parameters())  # loaded for inference unless is_trainable


def test_lora_only_adapters_train(adapted):
    _, _, model = adapted
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 3 * model.config.num_hidden_layers
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = random_ids(2, 8, seed=5)
    model.train()(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == trainable


def test_lora_merge_keeps_the_logits_and_loads_in_transformers(adapted, tmp_path):
    _, _, model = adapted
    ids = random_ids(2, 8, seed=6)
    with torch.no_grad():
        expected = model.eval()(input_ids=ids).logits
        assert model.config.num_hidden_layers == 2  # attributes reach the wrapped model
        torch.testing.assert_close(copy.deepcopy(model)(input_ids=ids).logits, expected, atol=0, rtol=0)
    merged = model.merge_and_unload()
    assert type(merged) is LlamaForCausalLM and "lora" not in " ".join(n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-5, rtol=0)
    merged.save_pretrained(tmp_path)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=ids).logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_decoding_through_the_cache_follows_the_full_forward(adapted, dtype):
    _, _, model = adapted
    model = model.to(dtype).eval()
    ids = random_ids(2, 10, seed=7)
    with torch.no_grad():
        full = model(input_ids=ids).logits.float()
        for rows in (ids, ids[:1]):  # batched and one-row decode paths (native, or packed and split)
            out = model(input_ids=rows[:, :5], use_cache=True)
            steps = [out.logits.float()]
            for t in range(5, rows.shape[1]):
                out = model(input_ids=rows[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
                steps.append(out.logits.float())
            atol = 1e-5 if dtype == torch.float32 else 3e-2
            torch.testing.assert_close(torch.cat(steps, 1), full[: rows.shape[0]], atol=atol, rtol=0)


def test_lora_bad_input_is_a_clear_error(llama_checkpoint, adapted, tmp_path):
    _, folder = llama_checkpoint("gqa")
    with pytest.raises(ValueError, match=r"match no linear layer of LlamaForCausalLM; its linear layers are named "
                                         r"down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"):
        get_peft_model(LlamaForCausalLM.from_pretrained(folder), LoraConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="needs target_modules"):
        LoraConfig()
    with pytest.raises(ValueError, match="bias='all' is not supported"):
        LoraConfig(target_modules=["q_proj"], bias="all")
    with pytest.raises(ValueError, match="rank r must be a positive integer, got 0"):
        LoraConfig(target_modules=["q_proj"], r=0)
    with pytest.raises(FileNotFoundError, match="has no adapter_model.safetensors"):
        PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder), tmp_path)

    _, _, model = adapted
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    base = LlamaForCausalLM.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"lora_A.weight has shape \(4, 64\), the model's adapter needs \(8, 64\)"):
        PeftModel.from_pretrained(base, tmp_path)
    assert not any("lora" in name for name, _ in base.named_modules())  # the model is left as it was
    assert all(p.requires_grad for p in base.parameters())
    (tmp_path / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="PEFT options leanformers does not read: use_dora"):
        PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder), tmp_path)
