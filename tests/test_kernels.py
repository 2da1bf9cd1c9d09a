"""Native kernels: the quantized ones (kernels/quant.c) and the layers that keep GGUF blocks
(models/quantized.py), against the gguf package's own dequantizer and against the eager path
(LEANFORMERS_KERNELS=0, or no compiler), which must give the same numbers; the dense fp32/bf16 matvec
(kernels/matvec.c) against the exact product and against torch's decode paths."""

import ctypes
import os
import shutil

import gguf
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leanformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from leanformers import kernels
from leanformers.kernels import KERNEL_TYPES, dense_matvec, dequantize_rows, quantized_matvec
from leanformers.models import layers, native_decode
from leanformers.models.quantized import QuantizedEmbedding, QuantizedLinear, quantize
from conftest import native_kernels_unbuilt
from test_llama import decode_logits, random_ids


# On a machine without a C compiler only the eager twins exist; they are tested on every machine below.
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                                    reason="no C compiler on this machine to build the native kernels with")


@pytest.fixture
def eager_kernels(monkeypatch):
    """The eager twins only, as on a machine without a C compiler."""
    with native_kernels_unbuilt(monkeypatch, "CC", "/nonexistent/cc"):
        yield


def random_blocks(type_name: str, rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """(rows, bytes per row) of random quantized bytes whose fp16 scales are small finite numbers."""
    _, per_block, block_bytes = KERNEL_TYPES[type_name]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (rows, columns // per_block, block_bytes), dtype=np.uint8)
    halves = {"Q8_0": [0], "Q4_0": [0], "Q5_0": [0], "Q4_1": [0, 2], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
    for offset in halves[type_name]:
        scales = rng.uniform(-0.05, 0.05, (rows, columns // per_block)).astype(np.float16)
        blocks[:, :, offset:offset + 2] = scales.view(np.uint8).reshape(rows, -1, 2)
    return torch.from_numpy(blocks.reshape(rows, -1))


def gguf_weights(blocks: torch.Tensor, type_name: str) -> torch.Tensor:
    """The independent oracle: the gguf package's numpy dequantizer."""
    return torch.from_numpy(gguf.quants.dequantize(blocks.numpy(), gguf.GGMLQuantizationType[type_name]).copy())


@needs_compiler
@pytest.mark.parametrize("type_name", list(KERNEL_TYPES))
def test_native_matvec_and_rows_equal_ggufs_weights(type_name):
    assert kernels.kernels_available()
    blocks = random_blocks(type_name, 96, 1024)
    weights = gguf_weights(blocks, type_name)
    assert torch.equal(dequantize_rows(blocks, type_name, 1024), weights)
    rows = torch.tensor([5, 0, 95, 5])
    assert torch.equal(dequantize_rows(blocks, type_name, 1024, rows=rows), weights[rows])
    for batch in (1, 8):
        x = torch.randn(batch, 1024, generator=torch.Generator().manual_seed(batch))
        expected = (x.double() @ weights.double().T).float()
        got = quantized_matvec(blocks, type_name, x)
        assert got.shape == (batch, 96)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_each_instruction_set_build_equals_ggufs_weights(other_build):
    library = other_build
    for type_name in KERNEL_TYPES:
        blocks = random_blocks(type_name, 40, 512, seed=7)
        x = torch.randn(3, 512, generator=torch.Generator().manual_seed(1))
        expected = (x.double() @ gguf_weights(blocks, type_name).double().T).float()
        got = quantized_matvec(blocks, type_name, x, library=library)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@needs_compiler
def test_quantized_linear_is_the_same_with_and_without_the_native_kernels(monkeypatch):
    layer = QuantizedLinear(1024, 96, "Q4_K", bias=True)
    layer.qweight = random_blocks("Q4_K", 96, 1024, seed=3)
    layer.bias.data.normal_()
    x = torch.randn(2, 1, 1024)
    with torch.no_grad():
        native = layer(x)
    with native_kernels_unbuilt(monkeypatch), torch.no_grad():
        eager = layer(x)
    torch.testing.assert_close(native, eager, rtol=1e-4, atol=1e-4 * float(eager.abs().max()))
    expected = (x @ gguf_weights(layer.qweight, "Q4_K").T + layer.bias).detach()
    torch.testing.assert_close(eager, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("type_name", list(KERNEL_TYPES))
def test_without_a_compiler_the_eager_twins_give_ggufs_weights(eager_kernels, type_name):
    blocks = random_blocks(type_name, 8, 512, seed=5)
    rows = torch.tensor([7, 2])
    assert quantized_matvec(blocks, type_name, torch.randn(1, 512)) is None  # nothing native to call
    assert torch.equal(dequantize_rows(blocks, type_name, 512, rows=rows), gguf_weights(blocks, type_name)[rows])
    with pytest.raises(IndexError, match="rows outside"):
        dequantize_rows(blocks, type_name, 512, rows=torch.tensor([8]))


def test_quantized_embedding_looks_up_dequantized_rows_and_refuses_bad_ids():
    table = QuantizedEmbedding(64, 256, "Q8_0", embed_scale=2.0)
    table.qweight = random_blocks("Q8_0", 64, 256)
    ids = torch.tensor([[3, 63], [0, 3]])
    assert torch.equal(table(ids), gguf_weights(table.qweight, "Q8_0")[ids] * 2.0)
    with pytest.raises(IndexError):
        table(torch.tensor([[64]]))


@pytest.fixture(scope="module")
def smollm2_quantized(smollm2_gguf):
    return AutoModelForCausalLM.from_pretrained(smollm2_gguf, dequantize=False)


@pytest.mark.slow
def test_smollm2_kept_quantized_generates_the_tokens_of_its_dequantized_weights(smollm2_quantized, smollm2_gguf):
    quantized = smollm2_quantized
    layers = [m for m in quantized.modules() if isinstance(m, QuantizedLinear)]
    assert len(layers) == 30 * 7 + 1 and {m.type_name for m in layers} == {"Q4_1", "Q8_0"}
    assert quantized.lm_head.qweight is quantized.model.embed_tokens.qweight  # tied: one copy of the blocks
    dense = AutoModelForCausalLM.from_pretrained(smollm2_gguf)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf)
    for prompt in ("The capital of France is", "def fibonacci(n):", "Once upon a time,", "Water boils at"):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            torch.testing.assert_close(quantized(ids).logits, dense(ids).logits, atol=5e-4, rtol=0)
        settings = dict(max_new_tokens=32, do_sample=False)
        assert torch.equal(quantized.generate(ids, **settings), dense.generate(ids, **settings)), prompt
    # The check: 10 prompts x 64 tokens, here as one left-padded batch (the kernel's several-row path).
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time,", "Water boils at",
               "The three primary colours are", "import numpy as np\n", "My favourite book is",
               "The largest planet in the solar system is", "To make a cup of tea,", "In 1969, the first"]
    batch = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    settings = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False)
    got, expected = quantized.generate(**batch, **settings), dense.generate(**batch, **settings)
    assert got.shape == (10, batch.input_ids.shape[1] + 64) and torch.equal(got, expected)


@pytest.mark.slow
def test_smollm2_dequantize_gives_back_the_fp32_weights_and_saving_needs_it(smollm2_gguf, tmp_path):
    quantized = AutoModelForCausalLM.from_pretrained(smollm2_gguf, dequantize=False)
    with pytest.raises(ValueError, match="call model.dequantize"):
        quantized.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())
    dense = AutoModelForCausalLM.from_pretrained(smollm2_gguf)
    quantized.dequantize()
    assert quantized.lm_head.weight is quantized.model.embed_tokens.weight
    expected = dense.state_dict()
    got = quantized.state_dict()
    assert set(got) == set(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_quantize_a_loaded_model_and_the_errors(tmp_path, llama_checkpoint):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    ids = torch.randint(0, 128, (2, 7))
    with torch.no_grad():
        dense = model(ids).logits
        quantize(model, "q8_0")
        assert isinstance(model.model.layers[0].mlp.down_proj, QuantizedLinear)
        quantized = model(ids).logits
    assert 0 < (quantized - dense).abs().max() < 0.05  # Q8_0's rounding, not another model
    with pytest.raises(ValueError, match="Q8_0 or Q4_0"):
        quantize(model, "q2_k")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        AutoModelForCausalLM.from_pretrained(llama_checkpoint()[1], dequantize=False)


# -- dense fp32 and bf16 weights (kernels/matvec.c) ------------------------------------------------------

# (out_features, in_features) of each linear layer of SmolLM2-135M and Gemma 3 270M, and one whose rows and
# columns fill no whole tile or vector. Gemma's output layer (262,144 rows) is cut to its first 8,195 rows:
# the same loops over a 32nd of the memory.
DENSE_SHAPES = {"smollm2-q-o": (576, 576), "smollm2-k-v": (192, 576), "smollm2-gate-up": (1536, 576),
                "smollm2-down": (576, 1536), "smollm2-lm-head": (49152, 576), "gemma3-q": (1024, 640),
                "gemma3-k-v": (256, 640), "gemma3-o": (640, 1024), "gemma3-gate-up": (2048, 640),
                "gemma3-down": (640, 2048), "gemma3-lm-head-rows": (8195, 640), "odd": (1000, 3000)}
DENSE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def random_linear(rows: int, columns: int, dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, columns, generator=generator).to(dtype),
            torch.randn(rows, generator=generator).to(dtype))


def assert_matvec_close(got, x, weight, bias):
    """got is x @ weight.T + bias summed in fp32 (rounding errors up to 1e-5 of the sum of the terms'
    magnitudes); for bf16, that sum rounded to nearest bf16 (half a unit in the last place, 2^-8 of the
    value): rounding down instead would fail. In bf16 it equals torch's fp32 product rounded to bf16 but for
    a few outputs whose two fp32 sums fell on either side of a rounding boundary."""
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if bias is None else bias
    exact = F.linear(x.double(), weight.double(), bias.double())
    magnitudes = F.linear(x.double().abs(), weight.double().abs(), bias.double().abs())
    assert got.dtype == x.dtype and got.shape == exact.shape
    allowed = 1e-5 * magnitudes + (2.0 ** -8 * exact.abs() if x.dtype == torch.bfloat16 else 0)
    assert ((got.double() - exact).abs() <= allowed).all(), float(((got.double() - exact).abs() / magnitudes).max())
    if x.dtype == torch.bfloat16:
        torchs = F.linear(x.float(), weight.float(), bias.float()).bfloat16()
        assert (got != torchs).float().mean() < 0.01


@needs_compiler
@pytest.mark.parametrize("dtype", list(DENSE_DTYPES.values()), ids=list(DENSE_DTYPES))
@pytest.mark.parametrize("shape", list(DENSE_SHAPES.values()), ids=list(DENSE_SHAPES))
def test_dense_matvec_is_the_linear_product_for_each_layer_shape(shape, dtype):
    assert kernels.kernels_available()
    weight, bias = random_linear(*shape, dtype, seed=shape[0])
    for batch in (1, 8):
        x = torch.randn(batch, shape[1], generator=torch.Generator().manual_seed(batch)).to(dtype)
        for b in (None, bias):
            [got] = dense_matvec([weight], [b], x)
            assert_matvec_close(got, x, weight, b)


def several_weights_cases(library=None):
    """(x, weights, biases, outputs) of q/k/v-like weights (one with 190 rows: no whole tile at its end) in
    one call, for batches that fill whole tiles of x rows and that leave some over, in fp32 and bf16."""
    for dtype in DENSE_DTYPES.values():
        q, q_bias = random_linear(576, 576, dtype, seed=1)
        k, _ = random_linear(192, 576, dtype, seed=2)
        v, v_bias = random_linear(190, 576, dtype, seed=3)
        for batch in (1, 3, 8, 16):
            x = torch.randn(batch, 576, generator=torch.Generator().manual_seed(batch)).to(dtype)
            weights, biases = [q, k, v], [q_bias, None, v_bias]
            yield x, weights, biases, dense_matvec(weights, biases, x, library=library)


@needs_compiler
def test_dense_matvec_of_several_weights_equals_one_call_for_each():
    for x, weights, biases, outputs in several_weights_cases():
        assert [out.shape for out in outputs] == [(x.shape[0], 576), (x.shape[0], 192), (x.shape[0], 190)]
        for out, weight, bias in zip(outputs, weights, biases, strict=True):
            assert torch.equal(out, dense_matvec([weight], [bias], x)[0])  # the same sums in the same order
            assert_matvec_close(out, x, weight, bias)


def test_each_instruction_set_build_computes_the_dense_matvec(other_build):
    for x, weights, biases, outputs in several_weights_cases(library=other_build):
        for out, weight, bias in zip(outputs, weights, biases, strict=True):
            assert_matvec_close(out, x, weight, bias)
    for dtype in DENSE_DTYPES.values():
        weight, bias = random_linear(1000, 3000, dtype, seed=4)
        x = torch.randn(5, 3000).to(dtype)
        assert_matvec_close(dense_matvec([weight], [bias], x, library=other_build)[0], x, weight, bias)


@needs_compiler
def test_dense_matvec_declines_what_it_cannot_run_and_refuses_shapes_that_do_not_fit():
    weight, bias = random_linear(8, 32, torch.float32)
    x = torch.randn(2, 32)
    assert dense_matvec([weight], [None], torch.randn(17, 32)) is None  # over MAX_MATVEC_ROWS: the packed path's
    assert dense_matvec([weight], [None], torch.randn(0, 32)) is None
    assert dense_matvec([weight], [None], x[None]) is None  # (B, 1, K): the caller flattens it
    assert dense_matvec([weight.half()], [None], x.half()) is None  # fp16: no kernel
    assert dense_matvec([weight.bfloat16()], [None], x) is None  # the weight's dtype is not x's
    assert dense_matvec([weight], [bias.bfloat16()], x) is None
    assert dense_matvec([torch.randn(32, 8).T], [None], x) is None  # a transposed view: rows not contiguous
    assert dense_matvec([weight] * 9, [None] * 9, x) is None  # over MAX_DENSE_WEIGHTS
    wide = torch.randn(2, 64)
    assert_matvec_close(dense_matvec([weight], [bias], wide[:, ::2])[0], wide[:, ::2], weight, bias)  # copied first
    with pytest.raises(ValueError, match="of shape \\(8, 32\\) cannot multiply inputs of 31 features"):
        dense_matvec([weight], [None], torch.randn(2, 31))
    with pytest.raises(ValueError, match="bias of shape \\(9,\\) does not fit a weight of 8 rows"):
        dense_matvec([weight], [torch.randn(9)], x)
    with pytest.raises(ValueError, match="2 weights but 1 biases"):
        dense_matvec([weight, weight], [None], x)
    # matvec.c checks its own limits too, before it reads anything
    library, y = kernels.native_library(), torch.empty(17, 8)
    weights, no_bias = (ctypes.c_void_p * 1)(weight.data_ptr()), (ctypes.c_void_p * 1)(None)
    for dtype, batch, count, rows, threads in ((0, 17, 1, 8, 1), (0, 0, 1, 8, 1), (2, 1, 1, 8, 1), (0, 1, 9, 8, 1),
                                               (0, 1, 1, -8, 1), (0, 1, 1, 8, 0)):
        assert library.lf_dense_matvec(dtype, count, weights, no_bias, (ctypes.c_int64 * 1)(rows), 32, y.data_ptr(),
                                       batch, y.data_ptr(), threads) == -1


def test_without_a_compiler_dense_weights_decode_on_torchs_paths(eager_kernels):
    weight, _ = random_linear(8, 32, torch.float32)
    assert dense_matvec([weight], [None], torch.randn(1, 32)) is None
    with torch.no_grad():
        assert layers.decode_path(torch.randn(1, 1, 32), weight) == "split"
        assert layers.decode_path(torch.randn(2, 1, 32), weight) in ("packed", None)


def count_native_calls(monkeypatch) -> list:
    """The weights' row counts of each dense_matvec call the linear layers make."""
    calls = []

    def counted(weights, biases, x, library=None):
        calls.append([w.shape[0] for w in weights])
        return kernels.dense_matvec(weights, biases, x, library)

    monkeypatch.setattr(layers, "dense_matvec", counted)
    return calls


@needs_compiler
@pytest.mark.parametrize("variant", ["bias", "tied"])
def test_llama_decodes_the_same_on_the_native_matvec_as_on_torchs_paths(llama_checkpoint, variant, monkeypatch):
    model = LlamaForCausalLM.from_pretrained(llama_checkpoint(variant)[1])
    ids = random_ids(2, 9, seed=11)
    # the products one call each, not the whole step in one (test_native_decode.py)
    monkeypatch.setattr(native_decode, "kernels_available", lambda: False)
    calls = count_native_calls(monkeypatch)
    with torch.no_grad():
        native = [decode_logits(model, rows, 4) for rows in (ids, ids[:1])]
        native_tokens = model.generate(ids, max_new_tokens=12, do_sample=False)
    # per decode step: q/k/v, o, gate/up and down of both layers, then the output layer (tied: the embedding)
    kv_rows = model.config.num_key_value_heads * 16
    assert calls[:9] == [[64, kv_rows, kv_rows], [64], [96, 96], [64]] * 2 + [[128]]
    # 5 steps of decode_logits for each batch; generate's 11 steps and the output layer of its prefill, which
    # computes the last position's logits only
    assert len(calls) == 9 * 5 * 2 + 9 * 11 + 1
    assert all(m.packed.version is None for m in model.modules() if isinstance(m, layers.Linear))  # no copies
    assert all(m.siblings.packed.version is None for m in model.modules() if getattr(m, "siblings", None))
    with native_kernels_unbuilt(monkeypatch), torch.no_grad():
        on_torch = [decode_logits(model, rows, 4) for rows in (ids, ids[:1])]
        torch_tokens = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert len(calls) == 9 * 5 * 2 + 9 * 11 + 1  # no native call with the kernels off
    for got, expected in zip(native, on_torch, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert torch.equal(native_tokens, torch_tokens)


@needs_compiler
def test_llama_bfloat16_decodes_on_the_native_matvec_without_packed_copies(llama_checkpoint, monkeypatch):
    model = LlamaForCausalLM.from_pretrained(llama_checkpoint("gqa")[1], dtype=torch.bfloat16)
    ids = random_ids(2, 10, seed=8)
    monkeypatch.setattr(native_decode, "kernels_available", lambda: False)  # one call a product, as above
    calls = count_native_calls(monkeypatch)
    with torch.no_grad():
        full = model(ids).logits.float()
    decoded = decode_logits(model, ids, 5).float()
    assert len(calls) == 9 * 5
    torch.testing.assert_close(decoded, full, atol=3e-2, rtol=0)
    assert torch.equal(decoded.argmax(-1), full.argmax(-1))
    assert all(m.packed.version is None for m in model.modules() if isinstance(m, layers.Linear))
