"""Native quantized kernels (kernels/quant.c) and the layers that keep GGUF blocks (models/quantized.py),
against the gguf package's own dequantizer and against the eager path (LEANFORMERS_KERNELS=0, or no
compiler), which must give the same numbers."""

import os
import shutil

import gguf
import numpy as np
import pytest
import torch

from leanformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from leanformers import kernels
from leanformers.kernels import KERNEL_TYPES, dequantize_rows, quantized_matvec
from leanformers.models.quantized import QuantizedEmbedding, QuantizedLinear, quantize


# On a machine without a C compiler only the eager twins exist; they are tested on every machine below.
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None,
                                    reason="no C compiler on this machine to build the native kernels with")


@pytest.fixture
def eager_kernels(monkeypatch):
    """The eager twins only, as on a machine without a C compiler."""
    monkeypatch.setenv("CC", "/nonexistent/cc")
    kernels.native_library.cache_clear()
    assert not kernels.kernels_available()
    yield
    kernels.native_library.cache_clear()


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


@needs_compiler
@pytest.mark.parametrize("build", ["avx2", "portable"])
def test_each_instruction_set_build_equals_ggufs_weights(build, tmp_path):
    """The native build picks AVX-512 here where the CPU has it; the AVX2 and plain C paths are built
    and checked too (the AVX2 one where the CPU can run it)."""
    if build == "avx2" and "avx2" not in kernels.cpu_flags().split():
        pytest.skip("this CPU has no AVX2")  # nothing here can run that build
    flags = {"avx2": ["-mavx2", "-mfma", "-mf16c"], "portable": []}[build]
    target = tmp_path / f"quant-{build}.so"
    assert kernels.compile_library(shutil.which("cc"), target, flags)
    library = kernels.bind(target)
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
    monkeypatch.setenv("LEANFORMERS_KERNELS", "0")
    kernels.native_library.cache_clear()
    try:
        assert not kernels.kernels_available()
        with torch.no_grad():
            eager = layer(x)
    finally:
        kernels.native_library.cache_clear()
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
