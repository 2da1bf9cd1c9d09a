"""Llama family against transformers: the same checkpoint loaded in both libraries."""

import copy
import io
import json

import pytest
import torch
import transformers

from leanformers import AutoConfig, AutoModel, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel

LAYOUTS = ["safetensors", "sharded", "bin", "sharded-bin"]
VARIANTS = ["untied", "tied", "gqa", "bias", "rope_linear", "rope_dynamic", "rope_llama3"]


def random_ids(batch, length, vocab=128, seed=0):
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_llama_logits_match_transformers_for_each_layout(llama_checkpoint, layout):
    ref, folder = llama_checkpoint("untied", layout)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    ids = random_ids(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_llama_logits_and_loss_match_transformers(llama_checkpoint, variant):
    ref, folder = llama_checkpoint(variant)
    ours = LlamaForCausalLM.from_pretrained(folder)
    # rope_dynamic has max_position_embeddings=16: 24 tokens exercise the rescaled frequencies
    ids = random_ids(3, 24, seed=1)
    labels = ids.clone()
    labels[:, :4] = -100
    with torch.no_grad():
        expected, got = ref(ids, labels=labels), ours(ids, labels=labels)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)


def test_llama_tied_checkpoint_shares_embedding(llama_checkpoint):
    _, folder = llama_checkpoint("tied")
    model = LlamaForCausalLM.from_pretrained(folder)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert "lm_head.weight" not in transformers_saved_keys(folder)


def transformers_saved_keys(folder):
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("side", ["left", "right"])
def test_llama_padded_batch_equals_unpadded_rows(llama_checkpoint, side):
    _, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder)
    rows = [random_ids(1, n, seed=n)[0] for n in (9, 5, 7)]
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = model(row[None]).logits[0]
            span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
            assert not torch.isnan(batched[i]).any()
            torch.testing.assert_close(batched[i, span], alone, atol=1e-5, rtol=0)


def test_llama_incremental_decoding_with_cache_equals_full_forward(llama_checkpoint):
    _, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids = random_ids(2, 10, seed=3)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :6], use_cache=True)
        steps = [out.logits]
        for t in range(6, 10):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_llama_hidden_states_attentions_and_logits_to_keep_match_transformers(llama_checkpoint):
    _, folder = llama_checkpoint("gqa")
    # SDPA returns no attention weights, so the oracle runs eager attention
    ref = transformers.LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ours = LlamaForCausalLM.from_pretrained(folder)
    ids = random_ids(2, 8, seed=4)
    with torch.no_grad():
        expected = ref(ids, output_hidden_states=True, output_attentions=True)
        got = ours(ids, output_hidden_states=True, output_attentions=True)
        last = ours(ids, logits_to_keep=1).logits
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    assert len(got.attentions) == len(expected.attentions) == 2
    assert got.attentions[0].shape == (2, 4, 8, 8)
    for a, b in zip(got.hidden_states + got.attentions, expected.hidden_states + expected.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert last.shape == (2, 1, 128)
    torch.testing.assert_close(last[:, 0], expected.logits[:, -1], atol=1e-4, rtol=0)


def test_llama_model_output_access_by_attribute_key_and_index(llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids = random_ids(1, 5)
    with torch.no_grad():
        out = model(ids, labels=ids, use_cache=False)
    assert out[0] is out.loss and out["loss"] is out.loss
    assert out[1] is out.logits and out["logits"] is out.logits
    assert list(out.keys()) == ["loss", "logits"]
    assert len(out.to_tuple()) == 2


def test_llama_base_model_matches_transformers_base(llama_checkpoint):
    ref, folder = llama_checkpoint("bias")
    base = AutoModel.from_pretrained(folder)
    assert isinstance(base, LlamaModel)
    ids = random_ids(2, 7)
    with torch.no_grad():
        torch.testing.assert_close(base(ids).last_hidden_state, ref.model(ids).last_hidden_state, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["untied", "tied", "bias"])
def test_llama_save_pretrained_loads_back_in_transformers(llama_checkpoint, tmp_path, variant):
    ref, folder = llama_checkpoint(variant)
    ours = LlamaForCausalLM.from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    assert {"config.json", "generation_config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = random_ids(2, 9)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)
    assert reloaded.config.tie_word_embeddings == ref.config.tie_word_embeddings


def test_llama_random_init_from_config_and_num_parameters():
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config.to_dict()))
    assert model.num_parameters() == reference.num_parameters()
    assert set(model.state_dict()) == set(reference.state_dict())
    weight = model.model.layers[0].self_attn.q_proj.weight
    assert 0.01 < weight.std().item() < 0.03  # normal(0, initializer_range=0.02)


def test_llama_dtype_and_v4_torch_dtype_spelling(llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    bf16 = LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.model.rotary_emb.inv_freq.dtype == torch.float32
    theirs = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    assert theirs.model.rotary_emb.inv_freq.dtype == torch.float32
    ids = random_ids(1, 12)
    with torch.no_grad():
        torch.testing.assert_close(bf16(ids).logits, theirs(ids).logits, atol=2e-2, rtol=0)
    assert LlamaForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert LlamaForCausalLM.from_pretrained(folder, torch_dtype="bfloat16").dtype == torch.bfloat16
    model = LlamaForCausalLM.from_pretrained(folder, dtype="auto")
    assert model.dtype == torch.float32
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32


def test_config_rope_theta_v4_and_rope_parameters_v5_agree():
    v4 = LlamaConfig(rope_theta=5e5, rope_scaling={"type": "linear", "factor": 4.0})
    v5 = LlamaConfig(rope_parameters={"rope_type": "linear", "rope_theta": 5e5, "factor": 4.0})
    assert v4.rope_parameters == v5.rope_parameters
    assert v4.rope_theta == 5e5 and v4.rope_scaling["factor"] == 4.0


def test_config_round_trips_unknown_keys_and_overrides(tmp_path, llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    data = json.loads((folder / "config.json").read_text())
    data["my_custom_key"] = {"a": [1, 2]}
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = AutoConfig.from_pretrained(tmp_path, num_labels=3)
    assert config.my_custom_key == {"a": [1, 2]} and config.num_labels == 3
    config.save_pretrained(tmp_path / "out")
    again = json.loads((tmp_path / "out" / "config.json").read_text())
    assert again["my_custom_key"] == {"a": [1, 2]}
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / "out")
    assert theirs.num_labels == 3 and theirs.hidden_size == config.hidden_size
    assert theirs.rope_parameters["rope_theta"] == config.rope_theta


def test_config_repr_prints_json_like_transformers():
    config = LlamaConfig(hidden_size=64, num_attention_heads=4)
    text = repr(config)
    assert text.startswith("LlamaConfig {")
    body = json.loads(text[len("LlamaConfig "):])
    assert body["hidden_size"] == 64 and body["model_type"] == "llama"
    assert "output_hidden_states" not in body  # a default every config shares
    tied = json.loads(repr(LlamaConfig(tie_word_embeddings=True))[len("LlamaConfig "):])
    assert tied["tie_word_embeddings"] is True  # the common default, but not Llama's


def decode_logits(model, ids, prefix):
    """Logits of ids[:, prefix:] computed one token at a time through the KV cache."""
    with torch.no_grad():
        out = model(ids[:, :prefix], use_cache=True)
        steps = [out.logits]
        for t in range(prefix, ids.shape[1]):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    return torch.cat(steps, 1)


@pytest.fixture(params=["native", "torch"])
def decode_kernels(request):
    """Each test of the fast decode paths runs twice: on the native matvec (where a compiler built it) and
    on torch's own paths ("split" for one fp32 row, "packed" copies for the rest)."""
    if request.param == "torch":
        request.getfixturevalue("native_kernels_off")
    return request.param


def test_llama_fast_decode_paths_follow_weight_updates(llama_checkpoint, monkeypatch, decode_kernels):
    from leanformers.models import layers

    _, folder = llama_checkpoint("bias")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids = random_ids(2, 8, seed=6)
    decode_logits(model, ids, 4)  # two rows: builds the packed copies on torch's paths
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.mul_(2.0)
        model.model.layers[0].self_attn.k_proj.bias.add_(0.5)
        model.lm_head.weight.add_(0.01)
        replaced = model.model.layers[-1].self_attn.o_proj
        replaced.weight = torch.nn.Parameter(torch.randn_like(replaced.weight))
    full = model(ids).logits.detach()  # with gradients on
    assert all(getattr(m, "packed", None) is None or m.packed.version is None for m in model.modules())
    assert all(m.siblings.packed.version is None for m in model.modules() if getattr(m, "siblings", None))  # a training forward drops the copies
    torch.testing.assert_close(decode_logits(model, ids, 4), full, atol=1e-5, rtol=0)  # native or packed
    torch.testing.assert_close(decode_logits(model, ids[:1], 4), full[:1], atol=1e-5, rtol=0)  # native or split
    monkeypatch.setattr(layers, "FAST_CPU_DECODE", False)
    torch.testing.assert_close(decode_logits(model, ids, 4), full, atol=1e-5, rtol=0)


class ScaledAdapter(torch.nn.Module):
    """Wraps a linear layer as adapters do: its own forward, the base layer's weight still reachable."""

    def __init__(self, base):
        super().__init__()
        self.base = base
        self.weight = base.weight

    def forward(self, x):
        return self.base(x) * 1.5


def test_llama_fast_decode_paths_run_layers_wrapped_by_adapters(llama_checkpoint, decode_kernels):
    _, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids = random_ids(2, 8, seed=9)
    decode_logits(model, ids, 4)  # siblings share calls (on torch's paths, packed copies) before the wrapping
    attention = model.model.layers[0].self_attn
    attention.q_proj = ScaledAdapter(attention.q_proj)
    model.lm_head = ScaledAdapter(model.lm_head)
    full = model(ids).logits.detach()
    torch.testing.assert_close(decode_logits(model, ids, 4), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(decode_logits(model, ids[:1], 4), full[:1], atol=1e-5, rtol=0)


def test_llama_float16_on_cpu_warns_and_auto_prefers_float32(llama_checkpoint, tmp_path):
    ref, _ = llama_checkpoint("untied")
    with pytest.warns(UserWarning, match="float16 on CPU is very slow"):
        model = LlamaForCausalLM.from_pretrained(llama_checkpoint("untied")[1], dtype=torch.float16)
    assert model.dtype == torch.float16
    copy.deepcopy(ref).half().save_pretrained(tmp_path)  # config.json now says dtype float16
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float16"
    assert LlamaForCausalLM.from_pretrained(tmp_path, dtype="auto").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'float13'"):
        LlamaForCausalLM.from_pretrained(tmp_path, dtype="float13")


def test_llama_bfloat16_decode_through_the_cache_follows_the_full_forward(llama_checkpoint):
    _, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    ids = random_ids(2, 10, seed=8)
    with torch.no_grad():
        full = model(ids).logits.float()
    decoded = decode_logits(model, ids, 5).float()
    torch.testing.assert_close(decoded, full, atol=3e-2, rtol=0)
    assert torch.equal(decoded.argmax(-1), full.argmax(-1))


@pytest.mark.usefixtures("native_kernels_off")  # the packed copies are built on torch's paths only
def test_llama_copied_or_pickled_after_batched_decoding_generates_the_same(llama_checkpoint):
    _, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids = random_ids(2, 6, seed=4)
    with torch.no_grad():
        expected = model.generate(ids, max_new_tokens=5, do_sample=False)  # builds the packed decode copies
        copied = copy.deepcopy(model)
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        attention = copied.model.layers[0].self_attn
        assert attention.q_proj.siblings.owner is attention  # the copy's layers share the copy's matmul
        assert torch.equal(copied.generate(ids, max_new_tokens=5, do_sample=False), expected)
        assert torch.equal(loaded.generate(ids, max_new_tokens=5, do_sample=False), expected)
