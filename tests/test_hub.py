"""Resolving names: folders, .gguf files, the Hugging Face cache layout, bundled names, downloads."""

import shutil

import pytest
import torch

from leanformers import AutoConfig, AutoModelForCausalLM
from leanformers.hub import resolve_model_path


def make_hub_cache(root, repo_id, folder, commit="0123456789abcdef0123456789abcdef01234567", ref="main"):
    """Lay out `folder` as huggingface_hub stores a download: blobs, snapshots/<commit>, refs/<ref>."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for path in folder.iterdir():
        blob = repo / "blobs" / f"blob-{commit[:6]}-{path.name}"
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(blob)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def test_hub_id_found_in_hf_hub_cache_layout(llama_checkpoint, tmp_path, monkeypatch):
    ref, folder = llama_checkpoint("gqa")
    snapshot = make_hub_cache(tmp_path / "hub", "tiny-org/tiny-llama", folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model_path("tiny-org/tiny-llama") == snapshot
    model = AutoModelForCausalLM.from_pretrained("tiny-org/tiny-llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)


def test_hf_home_and_named_revision(llama_checkpoint, tmp_path, monkeypatch):
    _, folder = llama_checkpoint("untied")
    make_hub_cache(tmp_path / "home" / "hub", "org/m", folder, commit="a" * 40)
    other = make_hub_cache(tmp_path / "home" / "hub2", "org/m", folder, commit="b" * 40, ref="v2")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert resolve_model_path("org/m").name == "a" * 40
    assert resolve_model_path("org/m", revision="v2", cache_dir=tmp_path / "home" / "hub2") == other
    assert AutoConfig.from_pretrained("org/m").model_type == "llama"


def test_offline_miss_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"'nobody/nothing' is not a local path.*HF_HUB_OFFLINE is set"):
        resolve_model_path("nobody/nothing")


def test_online_miss_downloads_through_huggingface_hub(llama_checkpoint, tmp_path, monkeypatch):
    import huggingface_hub

    _, folder = llama_checkpoint("untied")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(make_hub_cache(tmp_path / "dl", repo_id, folder))

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    path = resolve_model_path("org/fresh")
    assert (path / "config.json").is_file()
    repo_id, kwargs = calls[0]
    assert repo_id == "org/fresh" and "*.safetensors" in kwargs["allow_patterns"]
    assert "*.gguf" not in kwargs["allow_patterns"]


def test_gguf_file_inside_a_folder_and_bundled_name(smollm2_gguf):
    assert resolve_model_path(smollm2_gguf.parent, gguf_file=smollm2_gguf.name) == smollm2_gguf
    assert resolve_model_path("smollm2-135m-instruct") == smollm2_gguf
    assert resolve_model_path("SmolLM2-135M-Instruct") == smollm2_gguf
    with pytest.raises(FileNotFoundError, match=r"has no GGUF file 'missing\.gguf'"):
        resolve_model_path(smollm2_gguf.parent, gguf_file="missing.gguf")


def test_missing_local_path_and_plain_file_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does-not-exist does not exist"):
        resolve_model_path(str(tmp_path / "does-not-exist"))
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(ValueError, match=r"is a file; pass the folder"):
        resolve_model_path(tmp_path / "weights.txt")
