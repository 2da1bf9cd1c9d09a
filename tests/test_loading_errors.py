"""Bad checkpoints and bad saves: a clear error naming the file and what is wrong, and nothing
half-written left on disk."""

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from leanformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM
from leanformers.weights import save_safetensors


@pytest.fixture
def checkpoint_copy(llama_checkpoint, tmp_path):
    _, folder = llama_checkpoint("untied")
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


def test_missing_config_json_is_named(checkpoint_copy):
    (checkpoint_copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model has no config\.json"):
        AutoModelForCausalLM.from_pretrained(checkpoint_copy)


def test_config_json_that_is_not_json_names_file_and_line(checkpoint_copy):
    (checkpoint_copy / "config.json").write_text('{\n  "model_type": "llama",\n  "hidden_size": 64,,\n}')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON: .* line 3"):
        AutoConfig.from_pretrained(checkpoint_copy)


def test_unknown_model_type_lists_known_types(checkpoint_copy):
    data = json.loads((checkpoint_copy / "config.json").read_text())
    data["model_type"] = "flux-capacitor"
    (checkpoint_copy / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"unknown model_type 'flux-capacitor'; known types: .*llama"):
        AutoModelForCausalLM.from_pretrained(checkpoint_copy)


def test_weight_with_wrong_shape_names_key_and_shapes(checkpoint_copy):
    from leanformers.weights import read_safetensors

    state = read_safetensors(checkpoint_copy / "model.safetensors")
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(95, 64)
    save_safetensors(state, checkpoint_copy / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight: checkpoint \(95, 64\), model \(96, 64\)"):
        AutoModelForCausalLM.from_pretrained(checkpoint_copy)


def test_missing_and_unexpected_weights_are_listed(checkpoint_copy):
    from leanformers.weights import read_safetensors

    state = read_safetensors(checkpoint_copy / "model.safetensors")
    del state["model.norm.weight"]
    save_safetensors(state, checkpoint_copy / "model.safetensors")
    with pytest.raises(ValueError, match=r"lacks weights LlamaForCausalLM needs: model\.norm\.weight"):
        LlamaForCausalLM.from_pretrained(checkpoint_copy)
    state["model.norm.weight"] = torch.ones(64)
    state["model.layers.0.self_attn.extra.weight"] = torch.ones(3)
    save_safetensors(state, checkpoint_copy / "model.safetensors")
    with pytest.raises(ValueError, match=r"does not expect: model\.layers\.0\.self_attn\.extra\.weight"):
        LlamaForCausalLM.from_pretrained(checkpoint_copy)


def test_truncated_safetensors_is_reported(checkpoint_copy):
    path = checkpoint_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match=r"model\.safetensors is not a readable safetensors file .*truncated"):
        AutoModelForCausalLM.from_pretrained(checkpoint_copy)


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


@pytest.mark.parametrize("writer", ["torch.save", "raw pickle"])
def test_bin_with_arbitrary_pickle_is_refused_and_never_executed(checkpoint_copy, monkeypatch, writer):
    (checkpoint_copy / "model.safetensors").unlink()
    payload = {"model.norm.weight": Exploit()}
    if writer == "torch.save":
        torch.save(payload, checkpoint_copy / "pytorch_model.bin")
    else:
        with open(checkpoint_copy / "pytorch_model.bin", "wb") as f:
            pickle.dump(payload, f)
    monkeypatch.chdir(checkpoint_copy)
    with pytest.raises(OSError, match=r"pytorch_model\.bin holds objects other than tensors and was refused"):
        AutoModelForCausalLM.from_pretrained(checkpoint_copy)
    assert not (checkpoint_copy / "pwned-by-pickle").exists()


def test_gguf_of_unsupported_architecture_is_refused(tmp_path):
    import gguf

    path = tmp_path / "mamba.gguf"
    writer = gguf.GGUFWriter(str(path), "mamba")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"mamba\.gguf: GGUF architecture 'mamba' is not supported"):
        AutoModelForCausalLM.from_pretrained(path)


def test_file_that_is_not_gguf_is_reported(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf file at all")
    with pytest.raises(OSError, match=r"broken\.gguf is not a readable GGUF file"):
        AutoModelForCausalLM.from_pretrained(path)


def test_prompt_longer_than_context_is_refused(llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids = torch.randint(3, 100, (1, model.config.max_position_embeddings + 5))
    with pytest.raises(ValueError, match=r"max_position_embeddings"):
        model.generate(ids, max_new_tokens=5)


def test_token_ids_outside_vocabulary_are_refused(llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    model = LlamaForCausalLM.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 128\)"):
        model(torch.tensor([[5, 128]]))
    with pytest.raises(TypeError, match=r"integer token ids"):
        model(torch.tensor([[0.5, 1.0]]))


def test_failed_save_leaves_previous_files_intact(checkpoint_copy, tmp_path, monkeypatch):
    model = LlamaForCausalLM.from_pretrained(checkpoint_copy)
    target = tmp_path / "saved"
    model.save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def failing_replace(src, dst):
        raise OSError("disk full")

    with torch.no_grad():
        model.model.norm.weight.fill_(3.0)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(target)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in target.iterdir()}
    assert after == before  # no temporary files, no half-written weights
    reloaded = LlamaForCausalLM.from_pretrained(target)
    assert not torch.equal(reloaded.model.norm.weight, torch.full((64,), 3.0))


def test_save_into_a_file_path_is_refused(checkpoint_copy):
    model = LlamaForCausalLM.from_pretrained(checkpoint_copy)
    with pytest.raises(ValueError, match=r"needs a directory, but .*config\.json is a file"):
        model.save_pretrained(checkpoint_copy / "config.json")


def test_num_labels_disagreeing_with_id2label_is_refused():
    from leanformers import LlamaConfig

    with pytest.raises(ValueError, match=r"num_labels=3 disagrees with id2label, which has 2 labels"):
        LlamaConfig(id2label={0: "a", 1: "b"}, num_labels=3)
