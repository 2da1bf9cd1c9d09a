"""Decode steps through every layer in one native call (models/native_decode.py on kernels/decoder.c): against
the layers' own forward on the same model (the eager twin, itself held to transformers elsewhere) and against
transformers' generate; and the steps and layers it must leave to the eager twin."""

import pytest
import torch

from leanformers import (AutoModelForCausalLM, Gemma3TextConfig, Gemma3ForCausalLM, KVCache, LlamaConfig,
                         LlamaForCausalLM, MistralConfig, Qwen2Config, Qwen3Config)
from leanformers import kernels
from leanformers.models import native_decode
from leanformers.models.layers import Linear
from leanformers.models.quantized import quantize

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0)
CONFIGS = {
    "llama-bias": lambda: LlamaConfig(**TINY, attention_bias=True, mlp_bias=True),
    "qwen2": lambda: Qwen2Config(**TINY),  # q/k/v biases, none on o_proj
    "qwen3": lambda: Qwen3Config(**TINY, head_dim=24),  # per-head q/k norms; head_dim of its own
    "mistral-window": lambda: MistralConfig(**TINY, sliding_window=4),  # shorter than what is generated
}


def tiny_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(CONFIGS[family]()).eval()
    with torch.no_grad():  # biases and norms start at zero and one: move them off, so a slip shows
        for name, parameter in model.named_parameters():
            if "norm" in name or "bias" in name:
                parameter.add_(torch.randn_like(parameter) * 0.2)
    return model


@pytest.fixture
def native_steps(monkeypatch):
    """A list that counts the native steps taken (each call appends its batch size)."""
    taken = []
    real = native_decode.decode_step

    def counted(decoder, x, *args):
        taken.append(x.shape[0])
        return real(decoder, x, *args)

    monkeypatch.setattr(native_decode, "decode_step", counted)
    return taken


def eager_only(monkeypatch):
    """The layers' own forward for every step; the products keep their native kernels."""
    monkeypatch.setattr(native_decode, "kernels_available", lambda: False)


def greedy(model, ids, mask, new_tokens):
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, output_logits=True, return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits, dim=1)


def left_padded(batch: int, length: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    for row in range(1, batch):  # row r has r * 2 pads on the left
        ids[row, : 2 * row], mask[row, : 2 * row] = 0, 0
    return ids, mask


def stepped_logits(model, ids, mask, continuation):
    """The logits of each decode step that feeds `continuation` (B, n) one token at a time after the prompt."""
    cache, logits = KVCache(), []
    with torch.no_grad():
        model(ids, attention_mask=mask, cache=cache)
        for step in range(continuation.shape[1]):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            logits.append(model(continuation[:, step : step + 1], attention_mask=mask, cache=cache).logits)
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("family", list(CONFIGS))
def test_native_steps_generate_what_the_layers_forward_does(family, batch, native_steps, monkeypatch):
    model = tiny_model(family)
    ids, mask = left_padded(batch, 7, seed=batch)
    tokens, logits = greedy(model, ids, mask, 12)
    assert native_steps == [batch] * 11  # every step after the prefill
    eager_only(monkeypatch)
    eager_tokens, eager_logits = greedy(model, ids, mask, 12)
    assert native_steps == [batch] * 11
    assert torch.equal(tokens, eager_tokens)
    torch.testing.assert_close(logits, eager_logits, atol=1e-4, rtol=0)


def assert_within_two_bf16_units(got, expected):
    spacing = 2.0 ** (torch.floor(torch.log2(expected.abs().clamp_min(2**-30))) - 7)  # each value's bf16 ulp
    assert bool(((got - expected).abs() <= 2 * spacing).all())


@pytest.mark.parametrize("family", list(CONFIGS))
def test_bfloat16_native_steps_round_as_the_layers_forward_does(family, native_steps, monkeypatch):
    """Every op's result is rounded to bf16 where torch's bf16 ops round it; a product summed in another
    order can still round to the neighbouring bf16 value, so a logit may differ by a unit in its last place
    (and a near-tie between two tokens may break the other way: both runs are fed the same tokens)."""
    model = tiny_model(family).to(torch.bfloat16)
    ids, mask = left_padded(3, 7, seed=3)
    continuation = torch.randint(3, 128, (3, 10), generator=torch.Generator().manual_seed(4))
    native = stepped_logits(model, ids, mask, continuation).float()
    assert native_steps == [3] * 10
    eager_only(monkeypatch)
    eager = stepped_logits(model, ids, mask, continuation).float()
    assert_within_two_bf16_units(native, eager)
    assert float((native != eager).float().mean()) < 0.05


def test_native_steps_match_transformers_generate(llama_checkpoint, native_steps):
    reference, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids, mask = left_padded(2, 6, seed=5)
    tokens, logits = greedy(model, ids, mask, 10)
    assert native_steps == [2] * 9
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=10, min_new_tokens=10,
                                      do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert torch.equal(tokens, expected.sequences)
    torch.testing.assert_close(logits, torch.stack(expected.logits, dim=1), atol=1e-4, rtol=0)


def greedy_steps(model, ids, count: int, after_prefill=lambda cache: None):
    """Prefill ids into a fresh KVCache (then after_prefill(cache)), and `count` greedy decode steps fed one
    token at a time: their logits (B, count, V) and the cache."""
    cache, outputs = KVCache(), []
    with torch.no_grad():
        logits = model(ids, cache=cache).logits[:, -1:]
        after_prefill(cache)
        for _ in range(count):
            logits = model(logits.argmax(-1), cache=cache).logits
            outputs.append(logits)
    return torch.cat(outputs, dim=1), cache


def test_native_steps_grow_a_cache_made_without_capacity(native_steps, monkeypatch):
    """A cache that grows in chunks of 256 positions: the steps that cross a chunk's end grow it first."""
    model = tiny_model("llama-bias")
    ids = torch.randint(3, 128, (1, 254), generator=torch.Generator().manual_seed(1))
    native, cache = greedy_steps(model, ids, 4)  # positions 254..257
    assert native_steps == [1] * 4 and cache.get_seq_length() == 258 and cache.keys[0].shape[2] == 512
    eager_only(monkeypatch)
    torch.testing.assert_close(native, greedy_steps(model, ids, 4)[0], atol=1e-4, rtol=0)


def test_a_layer_whose_cache_buffer_is_full_is_grown_before_the_step(native_steps, monkeypatch):
    """Only the second layer's buffers are full: the step must not write past their end."""
    model = tiny_model("qwen2")
    ids = torch.randint(3, 128, (2, 9), generator=torch.Generator().manual_seed(6))

    def fill_second_layer(cache):
        cache.keys[1], cache.values[1] = cache.keys[1][:, :, :9].clone(), cache.values[1][:, :, :9].clone()

    native, cache = greedy_steps(model, ids, 3, fill_second_layer)
    assert native_steps == [2] * 3 and cache.keys[1].shape[2] == 256 and cache.get_seq_length(1) == 12
    eager_only(monkeypatch)
    torch.testing.assert_close(native, greedy_steps(model, ids, 3, fill_second_layer)[0], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_quantized_smollm2_native_steps_generate_the_eager_tokens(smollm2_gguf, native_steps, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf, dequantize=False)
    ids = torch.randint(100, 40000, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    tokens, logits = greedy(model, ids, mask, 32)
    assert native_steps == [2] * 31
    eager_only(monkeypatch)
    eager_tokens, eager_logits = greedy(model, ids, mask, 32)
    assert torch.equal(tokens, eager_tokens)
    torch.testing.assert_close(logits, eager_logits, atol=5e-4, rtol=0)


def test_a_weight_changed_between_calls_is_read_again(native_steps, monkeypatch):
    model = tiny_model("llama-bias")
    ids, mask = left_padded(1, 5, seed=3)

    def native_and_eager():
        native = greedy(model, ids, mask, 6)
        with monkeypatch.context() as patch:
            patch.setattr(native_decode, "kernels_available", lambda: False)
            eager = greedy(model, ids, mask, 6)
        assert torch.equal(native[0], eager[0])
        torch.testing.assert_close(native[1], eager[1], atol=1e-4, rtol=0)
        return native[1]

    before = native_and_eager()
    with torch.no_grad():  # in place: the same tensors, new versions
        model.model.layers[1].mlp.down_proj.weight.mul_(-3.0)
        model.model.layers[0].self_attn.q_proj.bias.add_(1.0)
    changed = native_and_eager()
    model.model.layers[0].input_layernorm.weight = torch.nn.Parameter(torch.full((64,), 2.0))  # a new tensor
    replaced = native_and_eager()
    assert native_steps == [1] * 15
    assert (changed - before).abs().max() > 0.01 and (replaced - changed).abs().max() > 0.01  # 100x the tolerance


class Doubled(torch.nn.Module):
    """A projection wrapped by a module of the user's: the native step cannot know what it computes."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(x) * 2.0


def test_steps_and_layers_the_native_step_leaves_to_the_forward(native_steps):
    model = tiny_model("llama-bias")
    ids, mask = left_padded(1, 5, seed=4)
    with torch.no_grad():
        cache = KVCache()
        model(ids, attention_mask=mask, cache=cache)
        step = torch.tensor([[7]])
        longer = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], dim=1)
        hidden = model(step, attention_mask=longer, cache=cache, output_hidden_states=True)
        assert len(hidden.hidden_states) == 3 and native_steps == []  # hidden states asked for
        cache.crop(5)
        native = model(step, attention_mask=longer, cache=cache).logits
        assert native_steps == [1]
        torch.testing.assert_close(native, hidden.logits, atol=1e-4, rtol=0)
    cache.crop(5)
    with torch.enable_grad():
        model(step, attention_mask=longer, cache=cache)  # gradients on
    assert native_steps == [1]
    rows = torch.randint(3, 128, (17, 4))
    with torch.no_grad():
        cache = KVCache()
        model(rows, cache=cache)
        model(rows[:, :1], cache=cache)  # 17 rows: more than the kernels take
    assert native_steps == [1]
    with torch.no_grad(), pytest.raises(RuntimeError):  # embeddings of another width: the forward's error
        cache = KVCache()
        model(ids, cache=cache)
        model(inputs_embeds=torch.randn(1, 1, 80), cache=cache)
    assert native_steps == [1]
    attention = model.model.layers[1].self_attn
    attention.v_proj = Doubled(attention.v_proj)
    assert native_decode.native_decoder(model.model.layers, KVCache()) is None
    with torch.no_grad():
        cache = KVCache()
        model(ids, cache=cache)
        model(step, cache=cache)
    assert native_steps == [1]


def test_layers_whose_sizes_decoder_c_would_misread_do_not_qualify():
    """decoder.c trusts the sizes it is given: a projection or norm that does not fit leaves the step to the
    forward (which raises its own error)."""
    model = tiny_model("llama-bias")
    assert native_decode.native_decoder(model.model.layers, KVCache()) is not None
    model.model.layers[1].mlp.down_proj = Linear(80, 64)  # the layer's activations are 96 wide
    assert native_decode.native_decoder(model.model.layers, KVCache()) is None
    model = tiny_model("qwen3")
    model.model.layers[0].self_attn.k_norm.weight = torch.nn.Parameter(torch.ones(8))  # head_dim is 24
    assert native_decode.native_decoder(model.model.layers, KVCache()) is None
    model = tiny_model("qwen2")
    model.model.layers[0].self_attn.q_proj.bias = torch.nn.Parameter(torch.zeros(8))
    assert native_decode.native_decoder(model.model.layers, KVCache()) is None


def test_gemma3_layers_do_not_qualify():
    torch.manual_seed(0)
    config = Gemma3TextConfig(**{**TINY, "head_dim": 16}, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"])
    model = Gemma3ForCausalLM(config).eval()
    assert native_decode.native_decoder(model.model.layers, KVCache()) is None


def test_without_the_kernels_the_native_step_declines(native_kernels_off, native_steps):
    model = tiny_model("qwen3")
    ids, mask = left_padded(2, 5, seed=6)
    tokens, _ = greedy(model, ids, mask, 4)
    assert native_steps == [] and tokens.shape == (2, 9)


@pytest.mark.parametrize("kind", ["float32", "bfloat16", "q4_0"])
def test_each_instruction_set_build_steps_as_the_layers_forward_does(other_build, kind, native_steps, monkeypatch):
    """The step built for AVX-512 without bf16 instructions (bf16 products widen x to fp32), for AVX2 and in
    plain C (quantized products dequantize whole blocks), as the layers' forward on the same model."""
    model = tiny_model("qwen3")
    if kind == "bfloat16":
        model = model.to(torch.bfloat16)
    elif kind == "q4_0":
        quantize(model, kind)  # every projection: in_features 64 and 96 split into blocks of 32
    ids, mask = left_padded(2, 6, seed=8)
    continuation = torch.randint(3, 128, (2, 6), generator=torch.Generator().manual_seed(9))
    with monkeypatch.context() as patch:
        patch.setattr(kernels, "native_library", lambda: other_build)
        native = stepped_logits(model, ids, mask, continuation).float()
    assert native_steps == [2] * 6
    eager_only(monkeypatch)
    eager = stepped_logits(model, ids, mask, continuation).float()
    if kind == "bfloat16":
        assert_within_two_bf16_units(native, eager)
    else:
        torch.testing.assert_close(native, eager, atol=1e-4, rtol=0)
