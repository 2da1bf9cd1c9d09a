"""The ground floor: JSON files in, atomic writes out, and the leanformers cache folder.

Every other module may import this one; it imports nothing of leanformers.
"""

import json
import os
from pathlib import Path


def read_json(path):
    """Parse a JSON file, naming the file and the position in the error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None


def write_atomic(path, data: bytes):
    """Write bytes to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def leanformers_cache_dir() -> Path:
    """Where converted GGUF files and processed datasets are cached: $LEANFORMERS_CACHE, else
    $XDG_CACHE_HOME/leanformers, else ~/.cache/leanformers."""
    if os.environ.get("LEANFORMERS_CACHE"):
        return Path(os.environ["LEANFORMERS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "leanformers"
