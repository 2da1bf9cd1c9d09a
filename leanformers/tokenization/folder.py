"""The files of a tokenizer folder, as transformers writes them, and reading the settings they hold.

tokenizer.json + tokenizer_config.json + special_tokens_map.json + added_tokens.json + chat_template.jinja
(or a SentencePiece tokenizer.model): `load_folder_config` merges the settings files into one
tokenizer_config-style dict; `token_content` reads a special-token value in any of the forms they use.
"""

from pathlib import Path

from tokenizers import AddedToken

from ..files import read_json

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"  # the legacy {token: id} list of added tokens
SPM_MODEL_FILE = "tokenizer.model"  # a SentencePiece model, read when there is no tokenizer.json
CHAT_TEMPLATE_FILE = "chat_template.jinja"

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def token_content(value):
    """A special-token value from a config file ("<s>", {"content": "<s>", ...}, AddedToken) as a string."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, AddedToken):
        return value.content
    if isinstance(value, dict) and "content" in value:
        return value["content"]
    raise ValueError(f"a special token must be a string or an object with 'content', got {value!r}")


def read_config_object(path) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def load_folder_config(folder: Path) -> dict:
    """tokenizer_config.json, completed by special_tokens_map.json and chat_template.jinja, as transformers reads them."""
    config_file = folder / TOKENIZER_CONFIG_FILE
    config = read_config_object(config_file) if config_file.is_file() else {}
    special_file = folder / SPECIAL_TOKENS_MAP_FILE
    if special_file.is_file():
        special = read_config_object(special_file)
        # A config with added_tokens_decoder is authoritative; older ones defer to special_tokens_map.json.
        for key, value in special.items():
            if "added_tokens_decoder" not in config or key not in config:
                config[key] = value
    template_file = folder / CHAT_TEMPLATE_FILE
    if template_file.is_file():
        config["chat_template"] = template_file.read_text(encoding="utf-8")
    added_file = folder / ADDED_TOKENS_FILE
    if added_file.is_file():
        config["added_tokens_decoder"] = {**added_tokens_from_file(added_file, config),
                                          **(config.get("added_tokens_decoder") or {})}
    return config


def added_tokens_from_file(path: Path, config: dict) -> dict:
    """added_tokens.json ({token: id}) as added_tokens_decoder entries; tokens named as special are special."""
    entries = read_config_object(path)
    special = {token_content(config.get(name)) for name in SPECIAL_TOKEN_NAMES if config.get(name)}
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    special |= {token_content(t) for t in (extra.values() if isinstance(extra, dict) else extra)}
    decoder = {}
    for token, index in entries.items():
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError(f"{path}: {token!r} maps to {index!r}; added_tokens.json maps each token to an integer id")
        decoder[str(index)] = {"content": token, "lstrip": False, "rstrip": False, "single_word": False,
                               "normalized": token not in special, "special": token in special}
    return decoder
