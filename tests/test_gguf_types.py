"""Every GGUF tensor type we read, bit for bit against the `gguf` package's reference dequantizer on
random blocks; types we cannot read, and architectures we do not support, refused by name."""

from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType  # noqa: E402

from leanformers import gguf_quants  # noqa: E402
from leanformers.gguf import SUPPORTED_GGUF_ARCHITECTURES, gguf_tensors, load_gguf_state_dict  # noqa: E402

# Byte offsets, inside one block, of the fp16 scale fields: random bytes there could be inf or NaN.
FP16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
               "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "IQ2_XXS": [0], "IQ2_XS": [0],
               "IQ2_S": [0], "IQ3_XXS": [0], "IQ3_S": [0], "IQ1_S": [0], "IQ1_M": [], "IQ4_NL": [0],
               "IQ4_XS": [0], "TQ1_0": [52], "TQ2_0": [64], "MXFP4": [], "NVFP4": []}


def random_blocks(type_name, rows=3, blocks_per_row=5, seed=0):
    """Random bytes shaped as `rows` rows of blocks, every fp16 scale field made finite (its exponent
    bits cleared of their top bit)."""
    _, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    data = np.random.default_rng(seed).integers(0, 256, size=(rows, blocks_per_row, type_size), dtype=np.uint8)
    for offset in FP16_FIELDS.get(type_name, []):
        data[..., offset + 1] &= 0xBF
    return data.reshape(rows, blocks_per_row * type_size)


def same_bits(got, expected):
    expected = np.asarray(expected, dtype=np.float32)
    return got.shape == expected.shape and np.array_equal(got.view(np.int32), expected.view(np.int32))


@pytest.mark.parametrize("type_name", [t for t in gguf_quants.READABLE_TYPES if t != "Q8_K"])
def test_gguf_type_dequantizes_bit_for_bit_like_the_gguf_package(type_name):
    data = random_blocks(type_name)
    expected = gguf.quants.dequantize(data, GGMLQuantizationType[type_name])
    got = gguf_quants.dequantize(data, type_name).numpy()
    assert same_bits(got, expected)


@pytest.mark.parametrize("type_name", [t for t in gguf_quants.BLOCK_DEQUANTIZERS if t != "Q8_K"])
def test_torch_block_dequantizer_is_bit_for_bit_like_the_gguf_package_even_where_numpy_is_used(type_name):
    data = random_blocks(type_name)
    _, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    got = gguf_quants.BLOCK_DEQUANTIZERS[type_name](torch.from_numpy(data.reshape(-1, type_size)))
    expected = gguf.quants.dequantize(data, GGMLQuantizationType[type_name])
    assert same_bits(got.reshape(expected.shape).numpy(), expected)


def test_f16_with_every_bit_pattern_dequantizes_like_the_gguf_package():
    data = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(4, -1)  # inf, NaN, subnormals too
    assert same_bits(gguf_quants.dequantize(data, "F16").numpy(), gguf.quants.dequantize(data.view(np.float16), GGMLQuantizationType.F16))


def test_q8_k_dequantizes_as_its_layout_says():
    # gguf has no Q8_K dequantizer: a block is an fp32 scale d, 256 int8 q and 16 int16 sums; x = q * d
    data = random_blocks("Q8_K").reshape(3, 5, 292)
    data[..., 3] &= 0xBF  # finite fp32 scales
    d = data[..., :4].copy().view(np.float32)
    expected = (data[..., 4:260].view(np.int8).astype(np.float32) * d).reshape(3, -1)
    assert same_bits(gguf_quants.dequantize(data.reshape(3, -1), "Q8_K").numpy(), expected)


def test_gguf_dequantization_in_chunks_equals_one_step(monkeypatch):
    data = random_blocks("Q4_K", rows=4, blocks_per_row=7)
    whole = gguf_quants.dequantize(data, "Q4_K")
    monkeypatch.setattr(gguf_quants, "WEIGHTS_PER_CHUNK", 3 * 256)
    assert same_bits(gguf_quants.dequantize(data, "Q4_K").numpy(), whole.numpy())


@pytest.mark.parametrize("type_name", ["Q8_1", "F64", "I32"])
def test_gguf_type_we_cannot_read_is_refused_by_name(type_name):
    with pytest.raises(ValueError, match=rf"GGUF tensor type {type_name} cannot be dequantized; leanformers reads F32, "):
        gguf_quants.dequantize(np.zeros((1, 36), dtype=np.uint8), type_name)


def write_gguf(path, arch, tensor_type):
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_head_count(1)
    writer.add_embedding_length(32)
    _, type_size = GGML_QUANT_SIZES[tensor_type]
    writer.add_tensor("blk.0.attn_v.weight", np.zeros((2, type_size), dtype=np.uint8), raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_file_with_a_tensor_type_we_cannot_read_names_the_tensor_and_the_type(tmp_path):
    path = tmp_path / "q8_1.gguf"
    write_gguf(path, "llama", GGMLQuantizationType.Q8_1)
    with pytest.raises(ValueError, match=r"q8_1\.gguf: tensor blk\.0\.attn_v\.weight: GGUF tensor type Q8_1 cannot"):
        load_gguf_state_dict(path)


def test_gguf_file_of_a_type_we_read_loads(tmp_path):
    path = tmp_path / "q5_0.gguf"
    write_gguf(path, "llama", GGMLQuantizationType.Q5_0)
    weights = load_gguf_state_dict(path)
    assert list(weights) == ["model.layers.0.self_attn.v_proj.weight"]
    assert tuple(weights["model.layers.0.self_attn.v_proj.weight"].shape) == (2, 32)


def test_gguf_of_unsupported_architecture_names_it_and_lists_the_supported_ones(tmp_path):
    path = tmp_path / "rwkv.gguf"
    write_gguf(path, "rwkv6", GGMLQuantizationType.F32)
    with pytest.raises(ValueError, match=r"architecture 'rwkv6' is not supported") as caught:
        load_gguf_state_dict(path)
    assert all(arch in str(caught.value) for arch in SUPPORTED_GGUF_ARCHITECTURES)


def mapped_ranges(path) -> list:
    """This process's memory maps of `path`, as (start, end) addresses."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            start, end = fields[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


@pytest.mark.parametrize("model", ["smollm2", pytest.param("gemma3", marks=pytest.mark.slow)])
def test_gguf_tensors_reads_what_ggufs_reader_reads(model, smollm2_gguf, gemma3_gguf):
    path = smollm2_gguf if model == "smollm2" else gemma3_gguf
    expected = gguf.GGUFReader(path).tensors
    got = gguf_tensors(path)
    assert len(got) == len(expected) > 200
    for ours, theirs in zip(got, expected, strict=True):
        assert (ours.name, ours.type_name) == (theirs.name, theirs.tensor_type.name)
        assert ours.data.dtype == theirs.data.dtype and ours.data.shape == theirs.data.shape, ours.name
        assert np.array_equal(ours.data.view(np.uint8), theirs.data.view(np.uint8)), ours.name


def test_kept_quantized_blocks_are_read_in_place_from_the_file(smollm2_gguf):
    """dequantize=False keeps the blocks in the file's memory map (only the un-permuted q/k rows are copies),
    so the model's resident memory is about the file's size."""
    from leanformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf, dequantize=False)
    ranges = mapped_ranges(Path(smollm2_gguf).resolve())
    in_file = {name: any(start <= t.data_ptr() < end for start, end in ranges) for name, t in model.named_buffers()
               if name.endswith("qweight")}
    assert len(in_file) == 30 * 7 + 1  # the tied lm_head shares the embedding's blocks
    copied = sorted(name for name, mapped in in_file.items() if not mapped)
    assert copied == sorted(f"model.layers.{i}.self_attn.{p}.qweight" for i in range(30) for p in ("q_proj", "k_proj"))


@pytest.mark.parametrize("damage", ["magic", "truncated header", "truncated data"])
def test_a_damaged_gguf_file_is_refused_by_name(damage, smollm2_gguf, tmp_path):
    data = Path(smollm2_gguf).read_bytes()
    data = {"magic": b"GGUX" + data[4:], "truncated header": data[:5000], "truncated data": data[: len(data) // 2]}[damage]
    path = tmp_path / "damaged.gguf"
    path.write_bytes(data)
    if damage == "truncated data":  # the header reads; the tensors past the end of the file are refused
        with pytest.raises(OSError, match="damaged.gguf is not a readable GGUF file"):
            [t.data.sum() for t in gguf_tensors(path)]
    else:
        with pytest.raises(OSError, match="damaged.gguf is not a readable GGUF file"):
            gguf_tensors(path)
    assert path.read_bytes() == data  # the copy-on-write map never writes back
