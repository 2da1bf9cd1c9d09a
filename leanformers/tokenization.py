"""Tokenizers: a PreTrainedTokenizer over the Rust `tokenizers` library, BatchEncoding, chat templates.

A tokenizer comes from a folder (tokenizer.json + tokenizer_config.json + special_tokens_map.json +
added_tokens.json + chat_template.jinja, as transformers writes them; or a SentencePiece tokenizer.model),
or from a GGUF file's metadata (byte-level BPE pre-tokenized the way llama.cpp reads `tokenizer.ggml.pre`,
or a SentencePiece 'llama' vocabulary). The Rust tokenizer does the work; this file keeps the settings
transformers keeps beside it (special tokens, padding side, model_max_length, chat template), turns
encodings into the dicts, lists and tensors transformers returns, renders chat templates in jinja2's
sandbox (with assistant-token masks), trains new tokenizers of the same kind and decodes incrementally
for streaming.
"""

import contextvars
import copy
import functools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from .files import read_json, write_atomic

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"  # the legacy {token: id} list of added tokens
SPM_MODEL_FILE = "tokenizer.model"  # a SentencePiece model, read when there is no tokenizer.json
CHAT_TEMPLATE_FILE = "chat_template.jinja"

VERY_LARGE_INTEGER = int(1e30)  # model_max_length when nothing says otherwise (transformers' value)
LARGE_INTEGER = int(1e20)  # above this, model_max_length means "no limit"

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# tokenizer_class values whose transformers class also returns token_type_ids by default.
TOKEN_TYPE_IDS_CLASSES = ("BertTokenizer", "ElectraTokenizer", "ConvBertTokenizer", "DebertaTokenizer",
                          "DebertaV2Tokenizer", "MarkupLMTokenizer", "LayoutLMv2Tokenizer", "FNetTokenizer")

# tokenizer_config.json keys that are about where files were, not about the tokenizer.
UNSAVED_CONFIG_KEYS = ("name_or_path", "tokenizer_file", "special_tokens_map_file", "auto_map", "added_tokens_decoder",
                       "vocab_file", "merges_file", "is_local", "local_files_only", "backend", "files_loaded")

# Keys the hub accepts that say nothing about the tokenizer itself.
HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "trust_remote_code", "use_fast",
              "force_download", "proxies", "subfolder", "_from_auto")

PADDING_STRATEGIES = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
TRUNCATION_STRATEGIES = {None: None, False: None, "do_not_truncate": None, True: "longest_first",
                         "longest_first": "longest_first", "only_first": "only_first", "only_second": "only_second"}

TRAINERS = {"BPE": trainers.BpeTrainer, "WordPiece": trainers.WordPieceTrainer,
            "WordLevel": trainers.WordLevelTrainer, "Unigram": trainers.UnigramTrainer}


# -- GGUF: byte-level BPE from the file's metadata -------------------------------------------------------
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> the regexes llama.cpp (llama-vocab.cpp) splits text with, applied one after
# another, each keeping matches and the text between them as separate pieces.
GGUF_PRE_SPLITS = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"],
    "falcon": [r"[\p{P}\$\+<=>\^~\|`]+", GPT2_REGEX, r"[0-9][0-9][0-9]"],
    **dict.fromkeys(["gpt-2", "phi-2", "mpt", "olmo", "jais", "jina-es", "jina-de", "jina-v1-en", "jina-v2-es",
                     "jina-v2-de", "jina-v2-code", "roberta-bpe", "gigachat", "trillion"], [GPT2_REGEX]),
    **dict.fromkeys(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"],
                    [r"\p{N}", GPT2_REGEX]),
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "dbrx", "smaug-bpe"],
                    [LLAMA3_REGEX]),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"], [QWEN2_REGEX]),
}

GGUF_TOKEN_CONTROL = 3
GGUF_TOKEN_USER_DEFINED = 4


def gguf_pre_tokenizer(pre: str | None, path):
    """The `tokenizers` pre-tokenizer for a GGUF `tokenizer.ggml.pre` value, as llama.cpp splits text."""
    pre = pre or "default"  # llama.cpp's choice for files written before the key existed
    if pre not in GGUF_PRE_SPLITS:
        raise ValueError(
            f"{path}: tokenizer.ggml.pre={pre!r} is not a pre-tokenizer leanformers knows; known: "
            f"{', '.join(sorted(GGUF_PRE_SPLITS))}"
        )
    regexes = GGUF_PRE_SPLITS[pre]
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if regexes == [GPT2_REGEX]:  # ByteLevel's own regex is GPT-2's, as in GPT-2's tokenizer.json
        return byte_level
    if regexes == [r"\p{N}", GPT2_REGEX]:  # as SmolLM2's and StarCoder's tokenizer.json spell it
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
    return pre_tokenizers.Sequence(splits + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


@functools.lru_cache(maxsize=1)
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level vocabularies are spelled in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def byte_level_spelling(token: str) -> str:
    alphabet = byte_alphabet()
    if set(token) <= set(alphabet.values()):
        return token
    return "".join(alphabet[b] for b in token.encode("utf-8"))


def tokenizer_from_gguf(path) -> tuple[Tokenizer, dict]:
    """A Tokenizer and its tokenizer_config-style settings from a GGUF file's metadata: byte-level BPE
    ('gpt2') or a SentencePiece vocabulary ('llama')."""
    from .gguf import gguf_metadata

    meta = gguf_metadata(path)
    kind = meta.get("tokenizer.ggml.model")
    if kind == "llama":
        return spm_tokenizer_from_gguf(meta, path)
    if kind != "gpt2":
        raise ValueError(
            f"{path}: tokenizer.ggml.model={kind!r}; leanformers builds tokenizers from GGUF files with "
            "byte-level BPE ('gpt2') or SentencePiece ('llama') vocabularies. Load the model's tokenizer.json "
            "folder instead."
        )
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    kept = (GGUF_TOKEN_CONTROL, GGUF_TOKEN_USER_DEFINED)
    vocab = {}
    for index, (token, token_type) in enumerate(zip(tokens, types)):
        vocab.setdefault(token if token_type in kept else byte_level_spelling(token), index)
    merges = []
    for line, merge in enumerate(meta.get("tokenizer.ggml.merges", [])):
        pair = merge.split(" ")
        if len(pair) != 2:
            raise ValueError(f"{path}: tokenizer.ggml.merges[{line}] = {merge!r} is not two tokens joined by a space")
        merges.append(tuple(pair))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = gguf_pre_tokenizer(meta.get("tokenizer.ggml.pre"), path)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k == GGUF_TOKEN_CONTROL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False)
                    for t, k in zip(tokens, types) if k == GGUF_TOKEN_USER_DEFINED])

    config = {"add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
              "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
              "tokenizer_class": "PreTrainedTokenizerFast"}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None and 0 <= token_id < len(tokens):
            config[name] = tokens[token_id]
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return tok, config


# -- SentencePiece vocabularies (GGUF 'llama', tokenizer.model) -----------------------------------------
SPM_NORMAL, SPM_UNKNOWN, SPM_CONTROL, SPM_USER_DEFINED, SPM_UNUSED, SPM_BYTE = 1, 2, 3, 4, 5, 6


def spm_merges(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges that reproduce SentencePiece's BPE: the pair forming the highest-scoring piece merges first.

    Every split of a piece into two pieces of the vocabulary is a merge ranked by the whole piece's score
    (ties: longer left part first, then longer right part; splits of one piece ordered by their ids), which
    is how llama.cpp's SPM tokenizer and transformers rebuild merges a file does not list."""
    index = {token: i for i, token in enumerate(tokens)}
    ranked = []
    for token, score in dict(zip(tokens, scores)).items():
        splits = [(token[:k], token[k:]) for k in range(1, len(token)) if token[:k] in index and token[k:] in index]
        splits.sort(key=lambda pair: (index[pair[0]], index[pair[1]]))
        ranked += [(score, len(left), len(right), left, right) for left, right in splits]
    ranked.sort(key=lambda m: (m[0], m[1], m[2]), reverse=True)  # stable: equal keys keep their order
    return [(left, right) for _, _, _, left, right in ranked]


def spm_backend(tokens, scores, types, unk_id, model_type="bpe", byte_fallback=True, add_dummy_prefix=True,
                precompiled_charsmap=b"", remove_extra_whitespaces=False) -> Tokenizer:
    """A `tokenizers` pipeline that tokenizes as SentencePiece does: "▁" for spaces, a prefix "▁" on the
    first word, byte fallback for characters outside the vocabulary."""
    from tokenizers import normalizers

    if model_type == "bpe":
        vocab = {token: i for i, token in enumerate(tokens)}
        unk = tokens[unk_id] if unk_id is not None else None
        model = models.BPE(vocab=vocab, merges=spm_merges(tokens, scores), unk_token=unk, fuse_unk=True,
                           byte_fallback=byte_fallback)
        backend = Tokenizer(model)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", split=False,
                                                         prepend_scheme="first" if add_dummy_prefix else "never")
        steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
        backend.decoder = decoders.Sequence(steps + [decoders.Strip(content=" ", left=1)] * add_dummy_prefix)
    elif model_type == "unigram":
        backend = Tokenizer(models.Unigram(list(zip(tokens, scores)), unk_id=unk_id, byte_fallback=byte_fallback))
        steps = [normalizers.Precompiled(precompiled_charsmap)] if precompiled_charsmap else []
        if remove_extra_whitespaces:
            steps.append(normalizers.Replace(Regex(" {2,}"), " "))
        backend.normalizer = normalizers.Sequence(steps) if steps else None
        scheme = "always" if add_dummy_prefix else "never"
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    else:
        raise ValueError(f"SentencePiece model type {model_type!r} is not supported; only BPE and Unigram are")
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, k in zip(tokens, types) if k == SPM_CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, k in zip(tokens, types) if k == SPM_USER_DEFINED])
    return backend


def spm_tokenizer_from_gguf(meta: dict, path) -> tuple[Tokenizer, dict]:
    """A SentencePiece-style GGUF vocabulary (tokenizer.ggml.model == 'llama'): tokens, scores and token
    types become a BPE with byte fallback, merges ranked by score, as llama.cpp's SPM vocabulary works."""
    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta.get("tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise ValueError(f"{path}: a 'llama' (SentencePiece) vocabulary needs tokenizer.ggml.scores, one per token "
                         f"({len(tokens)}); the file has {None if scores is None else len(scores)}")
    types = meta.get("tokenizer.ggml.token_type") or [SPM_NORMAL] * len(tokens)
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    if unk_id is None:
        unk_id = next((i for i, k in enumerate(types) if k == SPM_UNKNOWN), None)
    backend = spm_backend(tokens, [float(s) for s in scores], types, unk_id,
                          add_dummy_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", True)))
    # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise.
    config = {"add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", True)),
              "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
              "tokenizer_class": "PreTrainedTokenizerFast"}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None and 0 <= token_id < len(tokens):
            config[name] = tokens[token_id]
    if config.get("unk_token") is None and unk_id is not None:
        config["unk_token"] = tokens[unk_id]
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return backend, config


def read_protobuf(data: bytes) -> list[tuple[int, object]]:
    """(field number, value) pairs of one protobuf message: ints for varints, bytes for length-delimited
    fields, raw 4/8-byte strings for fixed-width ones. Enough to read a SentencePiece model."""
    fields, at = [], 0

    def varint():
        nonlocal at
        value, shift = 0, 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    while at < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, data[at: at + length]))
            at += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            fields.append((number, data[at: at + width]))
            at += width
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if at > len(data):
            raise ValueError("truncated protobuf message")
    return fields


def tokenizer_from_sentencepiece_model(path) -> tuple[Tokenizer, dict]:
    """A Tokenizer from a SentencePiece `tokenizer.model` file, read without the sentencepiece or protobuf
    packages (the ModelProto fields for pieces, trainer and normalizer settings are few and stable)."""
    import struct

    try:
        fields = read_protobuf(Path(path).read_bytes())
        tokens, scores, types = [], [], []
        trainer, normalizer = {}, {}
        for number, value in fields:
            if number == 1:  # SentencePiece {piece = 1, score = 2, type = 3}
                piece = dict(read_protobuf(value))
                tokens.append(piece.get(1, b"").decode("utf-8"))
                scores.append(struct.unpack("<f", piece[2])[0] if 2 in piece else 0.0)
                types.append(piece.get(3, SPM_NORMAL))
            elif number == 2:
                trainer = dict(read_protobuf(value))
            elif number == 3:
                normalizer = dict(read_protobuf(value))
    except (ValueError, IndexError, UnicodeDecodeError, struct.error) as err:
        raise ValueError(f"{path} is not a SentencePiece model file: {err}") from None
    if not tokens:
        raise ValueError(f"{path} holds no vocabulary pieces; it is not a SentencePiece model file")
    model_type = {1: "unigram", 2: "bpe"}.get(trainer.get(3, 1))
    if model_type is None:
        raise ValueError(f"{path}: SentencePiece model type {trainer.get(3)} (word/char) is not supported; "
                         "only BPE and Unigram models are")

    def signed(value):  # int32 fields are written as 64-bit two's complement when negative
        return value - (1 << 64) if value >= 1 << 63 else value

    unk_id = signed(trainer.get(40, 0))
    special = {name: signed(trainer.get(number, default))
               for name, number, default in (("bos_token", 41, 1), ("eos_token", 42, 2), ("pad_token", 43, -1))}
    backend = spm_backend(tokens, scores, types, unk_id if 0 <= unk_id < len(tokens) else None, model_type,
                          byte_fallback=bool(trainer.get(35, 0)), add_dummy_prefix=bool(normalizer.get(3, 1)),
                          precompiled_charsmap=normalizer.get(2, b""),
                          remove_extra_whitespaces=bool(normalizer.get(4, 1)))
    config = {"add_bos_token": True, "add_eos_token": False, "tokenizer_class": "PreTrainedTokenizerFast"}
    if 0 <= unk_id < len(tokens):
        config["unk_token"] = tokens[unk_id]
    for name, index in special.items():
        if 0 <= index < len(tokens):
            config[name] = tokens[index]
    return backend, config


# -- vocabulary files without tokenizer.json: GPT-2 (vocab.json + merges.txt), BERT (vocab.txt) -----------
VOCAB_TXT_FILE = "vocab.txt"
VOCAB_JSON_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
WORDPIECE_CLASSES = ("BertTokenizer", "DistilBertTokenizer")
BYTE_LEVEL_BPE_CLASSES = ("GPT2Tokenizer",)


def has_vocab_files(folder: Path) -> bool:
    return (folder / VOCAB_TXT_FILE).is_file() or ((folder / VOCAB_JSON_FILE).is_file() and (folder / MERGES_FILE).is_file())


def tokenizer_from_vocab_files(folder: Path, config: dict) -> tuple[Tokenizer, dict]:
    """The Tokenizer transformers' BertTokenizer (vocab.txt) or GPT2Tokenizer (vocab.json + merges.txt) builds
    from a folder without tokenizer.json; `config` is the folder's tokenizer_config, completed with the
    defaults those classes have."""
    from tokenizers import normalizers

    wordpiece = (folder / VOCAB_TXT_FILE).is_file()
    tokenizer_class = (config.get("tokenizer_class") or "").removesuffix("Fast")
    known = WORDPIECE_CLASSES if wordpiece else BYTE_LEVEL_BPE_CLASSES
    if tokenizer_class and tokenizer_class not in known:
        raise ValueError(f"{folder} has no {TOKENIZER_FILE} and its tokenizer_class is {tokenizer_class}; from "
                         f"{VOCAB_TXT_FILE if wordpiece else VOCAB_JSON_FILE + ' + ' + MERGES_FILE} alone leanformers "
                         f"builds {' / '.join(known)} only. Save the tokenizer with transformers to get {TOKENIZER_FILE}")
    config = dict(config)
    config.setdefault("tokenizer_class", known[0])
    if wordpiece:
        for name, token in (("unk_token", "[UNK]"), ("sep_token", "[SEP]"), ("pad_token", "[PAD]"),
                            ("cls_token", "[CLS]"), ("mask_token", "[MASK]")):
            config.setdefault(name, token)
        lines = (folder / VOCAB_TXT_FILE).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        vocab = {}
        for index, token in enumerate(lines):
            vocab[token] = index  # a repeated line keeps its last index, as transformers' load_vocab does
        unk = token_content(config["unk_token"])
        backend = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=config.get("tokenize_chinese_chars", True),
            strip_accents=config.get("strip_accents"), lowercase=config.get("do_lower_case", True))
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        cls, sep = token_content(config["cls_token"]), token_content(config["sep_token"])
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, vocab.get(cls, 2)), (sep, vocab.get(sep, 3))])
        return backend, config
    for name in ("unk_token", "bos_token", "eos_token"):
        config.setdefault(name, "<|endoftext|>")
    vocab = read_config_object(folder / VOCAB_JSON_FILE)
    merges = []
    for number, line in enumerate((folder / MERGES_FILE).read_text(encoding="utf-8").split("\n"), 1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise ValueError(f"{folder / MERGES_FILE}, line {number}: {line!r} is not two tokens joined by a space")
        merges.append(tuple(pair))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                                   end_of_word_suffix="", fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space", False)))
    backend.decoder = decoders.ByteLevel()
    return backend, config


# -- folders ---------------------------------------------------------------------------------------------
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


# -- chat templates --------------------------------------------------------------------------------------
def _template_error(message):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters, which chat templates must not do.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=32)
def compile_chat_template(template: str):
    """A chat template compiled in jinja2's immutable sandbox, with the helpers transformers gives templates."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text; rendering keeps the text as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            text = caller()
            # While spans are being tracked, fence the block so its place in the rendered chat can be found.
            return f"{GENERATION_START}{text}{GENERATION_END}" if TRACK_GENERATION.get() else text

    class Namespace(jinja2.utils.Namespace):
        """namespace() that refuses underscore names, so templates cannot reach Python internals through it."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _template_error
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = Namespace
    env.globals["dict"] = TemplateDict()
    return env.from_string(template)


class TemplateDict:
    """`dict(...)` for templates: builds plain dicts without exposing the dict type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


# Private-use characters that fence {% generation %} output while its character spans are tracked.
GENERATION_START, GENERATION_END = "\U000f0002", "\U000f0003"
TRACK_GENERATION = contextvars.ContextVar("track_generation", default=False)


def has_generation_blocks(template: str) -> bool:
    return re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def render_tracking_generation(compiled, **variables) -> tuple[str, list[tuple[int, int]]]:
    """Render, and return the [start, end) characters of each {% generation %} block's output."""
    token = TRACK_GENERATION.set(True)
    try:
        fenced = compiled.render(**variables)
    finally:
        TRACK_GENERATION.reset(token)
    pieces = re.split(f"({GENERATION_START}|{GENERATION_END})", fenced)
    text, spans, start = [], [], None
    length = 0
    for piece in pieces:
        if piece == GENERATION_START:
            start = length
        elif piece == GENERATION_END:
            spans.append((start, length))
        else:
            text.append(piece)
            length += len(piece)
    return "".join(text), spans


def message_texts(message: dict) -> list[str]:
    """The text a message carries: its content string, or the text of its content blocks."""
    content = message.get("content")
    if isinstance(content, str):
        return [content] if content else []
    if isinstance(content, list):
        return [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str) and b["text"]]
    return []


def assistant_spans_by_message(render, messages: list[dict], rendered: str, end_markers: list[str]):
    """Character spans of the assistant replies in `rendered`, for templates without {% generation %} blocks.

    Each assistant message's region is what rendering the conversation up to it adds to rendering the
    conversation before it; its content is looked up inside that region (the template writes the header
    first, so the last occurrence is the reply). The end-of-turn token the template writes right after the
    reply (<|im_end|>, <|eot_id|>, </s>, ...) belongs to the span: the model has to learn to produce it.
    When a template renders earlier messages differently once later ones follow, the search continues
    from the previous reply instead.
    """
    from jinja2.exceptions import TemplateError

    spans, cursor = [], 0
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or not message_texts(message):
            continue
        start, end, in_region = cursor, len(rendered), False
        try:
            before = render(messages[:i]) if i else ""
            upto = render(messages[: i + 1])
            if rendered.startswith(upto) and upto.startswith(before) and len(before) >= cursor:
                start, end, in_region = len(before), len(upto), True
        except TemplateError:
            pass  # the template refuses a partial conversation; search from the previous reply
        found = locate_texts(rendered, message_texts(message), start, end, from_the_end=in_region)
        if found is None:
            raise ValueError(
                f"message {i} (assistant): its content does not appear in the rendered chat, so the assistant "
                "mask cannot be built; use a template whose assistant turns are marked with "
                "{% generation %}...{% endgeneration %}"
            )
        at, stop = found
        marker = next((m for m in end_markers if rendered.startswith(m, stop)), None)
        stop += len(marker) if marker else 0
        spans.append((at, stop))
        cursor = stop
    return spans


def locate_texts(rendered, texts, start, end, from_the_end):
    """[first, last) characters of `texts` appearing in order in rendered[start:end], or None."""
    for variant in (texts, [t.strip() for t in texts]):
        if not all(variant):
            continue
        positions = []
        if from_the_end:
            limit = end
            for text in reversed(variant):
                at = rendered.rfind(text, start, limit)
                if at < 0:
                    break
                positions.insert(0, (at, at + len(text)))
                limit = at
        else:
            cursor = start
            for text in variant:
                at = rendered.find(text, cursor, end)
                if at < 0:
                    break
                positions.append((at, at + len(text)))
                cursor = at + len(text)
        if len(positions) == len(variant):
            return positions[0][0], positions[-1][1]
    return None


def token_mask_from_spans(offsets, spans) -> list[int]:
    """1 for every token whose characters overlap a span (a span cut by truncation keeps its remaining tokens)."""
    mask = [0] * len(offsets)
    span_index = 0
    for token_index, (token_start, token_end) in enumerate(offsets):
        while span_index < len(spans) and token_start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        if token_end > spans[span_index][0]:
            mask[token_index] = 1
    return mask


def plain_template_data(value):
    """A copy of `value` built from JSON types only, so a template sees no object with methods to abuse."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {plain_template_data(k): plain_template_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_template_data(v) for v in value]
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):  # numpy / torch scalars
        return plain_template_data(value.item())
    return f"<{type(value).__name__}>"


def check_conversation(conversation, index=None) -> list[dict]:
    """Messages as plain dicts without None values; each must be a dict with a string 'role'."""
    where = "conversation" if index is None else f"conversation {index}"
    if not isinstance(conversation, (list, tuple)):
        raise TypeError(f"{where} must be a list of messages (dicts with 'role' and 'content'), "
                        f"got {type(conversation).__name__}")
    messages = []
    for i, message in enumerate(conversation):
        if not isinstance(message, dict):
            raise TypeError(f"{where}, message {i}: expected a dict with 'role' and 'content', "
                            f"got {type(message).__name__}: {message!r}")
        if not isinstance(message.get("role"), str):
            raise ValueError(f"{where}, message {i} has no 'role' (a string such as 'user', 'assistant', "
                             f"'system'); its keys are {sorted(message)}")
        if message.get("content") is None and not message.get("tool_calls"):
            raise ValueError(f"{where}, message {i} ({message['role']}) has no 'content' (text, or a list of content "
                             f"blocks) and no 'tool_calls'; its keys are {sorted(message)}")
        message = plain_template_data({k: v for k, v in message.items() if v is not None})
        reasoning = next((message[k] for k in REASONING_FIELDS if k in message), None)
        if reasoning is not None:  # templates read reasoning_content, gpt-oss ones read thinking
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        messages.append(message)
    return messages


REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


# -- tools given as Python functions ----------------------------------------------------------------------
JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null",
              list: "array", tuple: "array", dict: "object"}


def json_schema_of_hint(hint, where: str) -> dict:
    """The JSON schema of a type hint: scalars, list[...], tuple[...], dict[...], unions, Optional, Literal."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return {}
    if origin is None and hint in JSON_TYPES:
        return {"type": JSON_TYPES[hint]}
    if origin in (typing.Union, types.UnionType):
        parts = [json_schema_of_hint(a, where) for a in args if a is not type(None)]
        if len(parts) == 1:
            schema = parts[0]
        elif all(p.keys() == {"type"} and isinstance(p["type"], str) for p in parts):
            names = sorted({p["type"] for p in parts})
            schema = {"type": names[0] if len(names) == 1 else names}
        else:
            schema = {"anyOf": parts}
        if type(None) in args:
            schema["nullable"] = True
        return schema
    if origin is typing.Literal and args:
        kinds = list(dict.fromkeys(JSON_TYPES[type(a)] for a in args))
        return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": list(args)}
    if origin is list:
        return {"type": "array", "items": json_schema_of_hint(args[0], where)} if args else {"type": "array"}
    if origin is tuple and args and ... not in args:
        return {"type": "array", "prefixItems": [json_schema_of_hint(a, where) for a in args]}
    if origin is dict:
        return {"type": "object", **({"additionalProperties": json_schema_of_hint(args[1], where)} if args else {})}
    raise TypeError(f"{where}: cannot describe the type hint {hint!r} in JSON schema; use int, float, str, bool, "
                    "list, dict, Optional, Union or Literal, or pass the tool as a JSON-schema dict")


def get_json_schema(func) -> dict:
    """A tool's JSON schema from a function's type hints and Google-style docstring (description, Args:, Returns:)."""
    import inspect
    import typing

    name = getattr(func, "__name__", "tool")
    doc = inspect.getdoc(func)
    if not doc:
        raise ValueError(f"tool {name!r} has no docstring; describe it and each argument (Google style, 'Args:')")
    description = re.match(r"(.*?)\s*(?:Args:|Returns:|Raises:|\Z)", doc, re.DOTALL).group(1).strip()
    args_block = re.search(r"\n\s*Args:\n(.*?)\s*(?:Returns:|Raises:|\Z)", doc, re.DOTALL)
    returns = re.search(r"\n\s*Returns:\n\s*(.*?)\s*(?:Raises:|\Z)", doc, re.DOTALL)
    arg_docs = {}
    if args_block:
        entries = re.findall(r"(?:^|\n)([ \t]*)(\w+)(?:[ \t]*\([^()\n]*\))?:\s*(.*?)\s*"
                             r"(?=\n(?!\1[ \t])[ \t]*\w+(?:[ \t]*\([^()\n]*\))?:|\Z)",
                             "\n".join(line for line in args_block.group(1).split("\n") if line.strip()), re.DOTALL)
        arg_docs = {arg: re.sub(r"\s*\n+\s*", " ", text.strip()) for _, arg, text in entries}
    hints = typing.get_type_hints(func)
    properties, required = {}, []
    for param in inspect.signature(func).parameters.values():
        if param.name in ("self", "cls") and param.annotation is inspect.Parameter.empty:
            continue
        if param.name not in hints:
            raise TypeError(f"tool {name!r}: argument {param.name!r} has no type hint")
        if param.name not in arg_docs:
            raise ValueError(f"tool {name!r}: the docstring's Args: section does not describe {param.name!r}")
        schema = json_schema_of_hint(hints[param.name], f"tool {name!r}, argument {param.name!r}")
        text = arg_docs[param.name]
        choices = re.search(r"\(choices:\s*(.*?)\)\s*$", text, flags=re.IGNORECASE)
        if choices:
            schema["enum"] = [c.strip() if isinstance(c, str) else c for c in json.loads(choices.group(1))]
            text = text[: choices.start()].strip()
        schema["description"] = text
        properties[param.name] = schema
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    parameters = {"type": "object", "properties": properties, **({"required": required} if required else {})}
    out = {"name": name, "description": description, "parameters": parameters}
    if "return" in hints:
        try:
            out["return"] = json_schema_of_hint(hints["return"], f"tool {name!r}, return value")
            if returns:
                out["return"]["description"] = returns.group(1).strip()
        except TypeError:
            pass
    return {"type": "function", "function": out}


CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def tag_final_message(messages: list[dict], field: str):
    """Append a marker to the last message's text so the rendered chat can be cut right after it."""
    if not messages:
        raise ValueError("continue_final_message is set but the conversation is empty")
    final = messages[-1].get(field)
    if isinstance(final, str):
        messages[-1][field] = final + CONTINUE_TAG
        return final
    if isinstance(final, list):
        for block in reversed(final):
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                text = block["text"]
                block["text"] = text + CONTINUE_TAG
                return text
    raise ValueError(f"continue_final_message is set but the final message has no text in {field!r} to continue")


def cut_after_final_message(rendered: str, final_text: str) -> str:
    at = rendered.rfind(CONTINUE_TAG.strip())
    if at < 0 or final_text.strip() not in rendered:
        raise ValueError("continue_final_message is set but the chat template dropped the final message's text; "
                         f"rendered chat:\n{rendered}")
    if rendered[at: at + len(CONTINUE_TAG)] == CONTINUE_TAG:
        return rendered[:at]
    return rendered[:at].rstrip()  # the template trimmed trailing space after the marker


# -- outputs ---------------------------------------------------------------------------------------------
def to_tensor(value, tensor_type: str, key: str):
    """A (nested) list of numbers as a torch or numpy array, or a clear error when rows differ in length."""
    if isinstance(value, list) and value and isinstance(value[0], list) and len({len(v) for v in value}) > 1:
        raise ValueError(
            f"cannot make a tensor of {key!r}: its sequences have different lengths "
            f"({sorted({len(v) for v in value})}); pass padding=True (and truncation=True) to get equal lengths"
        )
    if tensor_type == "pt":
        import torch

        return value if isinstance(value, torch.Tensor) else torch.tensor(value)
    import numpy as np

    return np.asarray(value)


def check_tensor_type(return_tensors):
    if return_tensors not in (None, "pt", "np"):
        raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")


class CharSpan(NamedTuple):
    """Characters [start, end) of a text."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Tokens [start, end) of an encoding."""

    start: int
    end: int


class BatchEncoding(dict):
    """What a tokenizer returns: a dict (input_ids, attention_mask, ...) with attribute access.

    `encodings` keeps the Rust `tokenizers.Encoding` per sequence (tokens, offsets, word ids).
    """

    def __init__(self, data=None, encodings=None, tensor_type=None):
        super().__init__(data or {})
        self._encodings = encodings
        if tensor_type is not None:
            self.convert_to_tensors(tensor_type)

    def __getattr__(self, name):
        if name.startswith("__") or name == "_encodings":
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no {name!r}; it holds {list(self.keys())}") from None

    def __getitem__(self, item):
        if isinstance(item, str):
            return super().__getitem__(item)
        if isinstance(item, int) and self._encodings is not None:
            return self._encodings[item]
        if isinstance(item, slice):
            return {key: value[item] for key, value in self.items()}
        raise KeyError(item)

    def __getstate__(self):
        return {"data": dict(self), "encodings": self._encodings}

    def __setstate__(self, state):
        self.update(state["data"])
        self._encodings = state["encodings"]

    def __reduce__(self):
        return (BatchEncoding, (dict(self), self._encodings))

    @property
    def encodings(self):
        return self._encodings

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, the index of the word it came from (None for special and padding tokens)."""
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, 0 or 1 for the first or second text of a pair (None for special tokens)."""
        return self._encoding(batch_index).sequence_ids

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None

    @property
    def n_sequences(self) -> int | None:
        return None if self._encodings is None else self._encodings[0].n_sequences

    @staticmethod
    def _batch_and_index(batch_or_index, index):
        return (batch_or_index, index) if index is not None else (0, batch_or_index)

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        """The (start, end) characters of a token in its text, or None for special and padding tokens."""
        batch_index, token_index = self._batch_and_index(batch_or_token_index, token_index)
        span = self._encoding(batch_index).token_to_chars(token_index)
        return CharSpan(*span) if span is not None else None

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0):
        """The index of the token holding a character of the text (or of the pair's second text), or None."""
        batch_index, char_index = self._batch_and_index(batch_or_char_index, char_index)
        return self._encoding(batch_index).char_to_token(char_index, sequence_index)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None):
        batch_index, token_index = self._batch_and_index(batch_or_token_index, token_index)
        return self._encoding(batch_index).token_to_word(token_index)

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None):
        batch_index, token_index = self._batch_and_index(batch_or_token_index, token_index)
        return self._encoding(batch_index).token_to_sequence(token_index)

    def word_to_tokens(self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0):
        """The (start, end) tokens of a word, or None when the word produced no token."""
        batch_index, word_index = self._batch_and_index(batch_or_word_index, word_index)
        span = self._encoding(batch_index).word_to_tokens(word_index, sequence_index)
        return TokenSpan(*span) if span is not None else None

    def word_to_chars(self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0):
        batch_index, word_index = self._batch_and_index(batch_or_word_index, word_index)
        span = self._encoding(batch_index).word_to_chars(word_index, sequence_index)
        return CharSpan(*span) if span is not None else None

    def char_to_word(self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0):
        batch_index, char_index = self._batch_and_index(batch_or_char_index, char_index)
        return self._encoding(batch_index).char_to_word(char_index, sequence_index)

    def _encoding(self, batch_index):
        if self._encodings is None:
            raise ValueError("this BatchEncoding was not made by a tokenizer, so it has no tokens or word ids")
        return self._encodings[batch_index]

    def convert_to_tensors(self, tensor_type):
        check_tensor_type(tensor_type)
        if tensor_type is not None:
            for key, value in self.items():
                self[key] = to_tensor(value, tensor_type, key)
        return self

    def to(self, device):
        """Move every tensor to `device` (a string, torch.device or int); other values are kept."""
        import torch

        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


def to_id_list(ids):
    """Token ids (int, list, tuple, numpy array, torch tensor) as plain Python ints / lists."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, (list, tuple)):
        return [to_id_list(i) for i in ids]
    return int(ids)


# -- the tokenizer ---------------------------------------------------------------------------------------
class PreTrainedTokenizer:
    """A fast tokenizer: a `tokenizers.Tokenizer` plus the settings transformers keeps beside it."""

    padding_side = "right"
    truncation_side = "right"

    def __init__(self, tokenizer_object: Tokenizer | None = None, tokenizer_file=None, name_or_path="", **config):
        if tokenizer_object is None:
            if tokenizer_file is None:
                raise ValueError("PreTrainedTokenizer needs tokenizer_object= (a tokenizers.Tokenizer) or "
                                 "tokenizer_file= (a tokenizer.json path)")
            tokenizer_object = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer = tokenizer_object
        # Padding and truncation are set per call; what tokenizer.json carries would leak into every call.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.name_or_path = str(name_or_path)
        self.init_kwargs = copy.deepcopy({k: v for k, v in config.items() if k not in UNSAVED_CONFIG_KEYS})

        self.model_max_length = int(config.get("model_max_length") or VERY_LARGE_INTEGER)
        self.padding_side = self._check_side("padding_side", config.get("padding_side", "right"))
        self.truncation_side = self._check_side("truncation_side", config.get("truncation_side", "right"))
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        self.tokenizer_class = config.get("tokenizer_class") or "PreTrainedTokenizerFast"
        self.model_input_names = list(config.get("model_input_names") or self._default_input_names())
        self.chat_template = config.get("chat_template")
        if isinstance(self.chat_template, list):  # [{"name": ..., "template": ...}, ...]
            self.chat_template = {t["name"]: t["template"] for t in self.chat_template}

        self._special_tokens = {name: token_content(config.get(name)) for name in SPECIAL_TOKEN_NAMES}
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        self._extra_special_tokens = [token_content(t) for t in (extra.values() if isinstance(extra, dict) else extra)]
        self._add_saved_added_tokens(config.get("added_tokens_decoder") or {})
        self._add_missing_special_tokens()

        self._add_bos_token = bool(config.get("add_bos_token", False))
        self._add_eos_token = bool(config.get("add_eos_token", False))
        self._manage_post_processor = (
            "add_bos_token" in config or "add_eos_token" in config or self._tokenizer.post_processor is None
        )
        if self._manage_post_processor:
            self.update_post_processor()

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *inputs, gguf_file=None, **kwargs):
        from .hub import resolve_model_path

        if inputs:
            raise TypeError(f"from_pretrained takes keyword arguments only after the path, got {inputs!r}")
        revision, cache_dir = kwargs.get("revision"), kwargs.get("cache_dir")
        for key in HUB_KWARGS:
            kwargs.pop(key, None)
        path = resolve_model_path(pretrained_model_name_or_path, gguf_file=gguf_file,
                                  revision=revision, cache_dir=cache_dir)
        if path.suffix == ".gguf":
            backend, config = tokenizer_from_gguf(path)
        elif not (path / TOKENIZER_FILE).is_file() and (path / SPM_MODEL_FILE).is_file():
            backend, config = tokenizer_from_sentencepiece_model(path / SPM_MODEL_FILE)
            config.update(load_folder_config(path))
        elif not (path / TOKENIZER_FILE).is_file() and has_vocab_files(path):
            backend, config = tokenizer_from_vocab_files(path, {**load_folder_config(path), **kwargs})
        else:
            tokenizer_file = path / TOKENIZER_FILE
            if not tokenizer_file.is_file():
                present = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
                raise FileNotFoundError(
                    f"{path} has no {TOKENIZER_FILE}; a tokenizer folder needs {TOKENIZER_FILE} "
                    f"(with optional {TOKENIZER_CONFIG_FILE}, {SPECIAL_TOKENS_MAP_FILE}, {CHAT_TEMPLATE_FILE}), "
                    f"or pass gguf_file= for a GGUF file. The folder holds: {present or 'nothing'}"
                )
            try:
                backend = Tokenizer.from_file(str(tokenizer_file))
            except Exception as err:
                raise ValueError(f"{tokenizer_file} is not a tokenizers file: {err}") from None
            config = load_folder_config(path)
        config.update(kwargs)
        config["name_or_path"] = str(pretrained_model_name_or_path)
        return cls(tokenizer_object=backend, **config)

    @staticmethod
    def _check_side(name, side):
        if side not in ("left", "right"):
            raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
        return side

    def _default_input_names(self):
        name = self.tokenizer_class.removesuffix("Fast")
        if name in TOKEN_TYPE_IDS_CLASSES:
            return ["input_ids", "token_type_ids", "attention_mask"]
        return ["input_ids", "attention_mask"]

    def _add_saved_added_tokens(self, added_tokens_decoder: dict):
        """Add the tokens tokenizer_config.json lists that tokenizer.json does not already have."""
        have = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}
        for index in sorted(added_tokens_decoder, key=int):
            entry = added_tokens_decoder[index]
            token = entry if isinstance(entry, AddedToken) else AddedToken(**{
                k: v for k, v in entry.items() if k != "__type"})
            if token.content not in have:
                self._tokenizer.add_tokens([token])
                have.add(token.content)
                given = self._tokenizer.token_to_id(token.content)
                if given != int(index):
                    raise ValueError(
                        f"added token {token.content!r} is listed with id {index}, but the vocabulary has "
                        f"{given} tokens before it; the added tokens' ids must follow the vocabulary without gaps"
                    )

    def _add_missing_special_tokens(self):
        have = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}
        missing = [t for t in [*self._special_tokens.values(), *self._extra_special_tokens] if t and t not in have]
        if missing:
            self._tokenizer.add_special_tokens(
                [AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(missing)])

    def update_post_processor(self):
        """Rebuild the post-processor from add_bos_token / add_eos_token and the bos / eos tokens."""
        bos, eos = self.bos_token, self.eos_token
        add_bos = self._add_bos_token and bos is not None
        add_eos = self._add_eos_token and eos is not None
        single = " ".join([f"{bos}:0"] * add_bos + ["$A:0"] + [f"{eos}:0"] * add_eos)
        pair = " ".join([single] + [f"{bos}:1"] * add_bos + ["$B:1"] + [f"{eos}:1"] * add_eos)
        special = [(bos, self.bos_token_id)] * add_bos + [(eos, self.eos_token_id)] * add_eos
        self._tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                        special_tokens=special)

    @property
    def add_bos_token(self) -> bool:
        return self._add_bos_token

    @add_bos_token.setter
    def add_bos_token(self, value):
        self._add_bos_token = bool(value)
        self._manage_post_processor = True
        self.update_post_processor()

    @property
    def add_eos_token(self) -> bool:
        return self._add_eos_token

    @add_eos_token.setter
    def add_eos_token(self, value):
        self._add_eos_token = bool(value)
        self._manage_post_processor = True
        self.update_post_processor()

    # -- special tokens ---------------------------------------------------------------------------------
    def _get_special(self, name):
        return self._special_tokens[name]

    def _set_special(self, name, value):
        self._special_tokens[name] = token_content(value)
        if self._special_tokens[name] is not None:
            self._add_missing_special_tokens()
        if name in ("bos_token", "eos_token") and getattr(self, "_manage_post_processor", False):
            self.update_post_processor()

    def _get_special_id(self, name):
        token = self._special_tokens[name]
        return None if token is None else self.convert_tokens_to_ids(token)

    def _set_special_id(self, name, value):
        if value is None:
            self._set_special(name, None)
            return
        token = self._tokenizer.id_to_token(int(value))
        if token is None:
            raise ValueError(f"{name}_id={value} is not in the vocabulary (size {len(self)})")
        self._set_special(name, token)

    @property
    def special_tokens_map(self) -> dict:
        """The named special tokens that are set (bos_token, eos_token, ...), as strings."""
        out = {name: token for name, token in self._special_tokens.items() if token is not None}
        if self._extra_special_tokens:
            out["additional_special_tokens"] = list(self._extra_special_tokens)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        named = [t for t in self._special_tokens.values() if t is not None]
        return list(dict.fromkeys(named + self._extra_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._extra_special_tokens)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._tokenizer.get_added_tokens_decoder().items()))

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {t.content: i for i, t in self.added_tokens_decoder.items()}

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens to the vocabulary; returns how many were new."""
        if isinstance(new_tokens, (str, AddedToken)):
            new_tokens = [new_tokens]
        if special_tokens:
            return self._tokenizer.add_special_tokens(list(new_tokens))
        return self._tokenizer.add_tokens(list(new_tokens))

    def add_special_tokens(self, special_tokens_dict: dict) -> int:
        """Set named special tokens (and additional_special_tokens), adding them to the vocabulary."""
        before = len(self)
        for name, value in special_tokens_dict.items():
            if name in ("additional_special_tokens", "extra_special_tokens"):
                self._extra_special_tokens = list(dict.fromkeys(
                    self._extra_special_tokens + [token_content(v) for v in value]))
                self._add_missing_special_tokens()
            elif name in SPECIAL_TOKEN_NAMES:
                self._set_special(name, value)
            else:
                raise ValueError(f"{name!r} is not a special token name; use one of {SPECIAL_TOKEN_NAMES} "
                                 "or 'additional_special_tokens'")
        return len(self) - before

    # -- vocabulary ------------------------------------------------------------------------------------
    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens):
        if tokens is None:
            return None
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        ids = to_id_list(ids)
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(i) for i in ids if i not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self._tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    # -- encoding --------------------------------------------------------------------------------------
    def __call__(self, text=None, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
                 max_length: int | None = None, stride: int = 0, is_split_into_words: bool = False,
                 pad_to_multiple_of: int | None = None, padding_side: str | None = None, return_tensors=None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                 truncation_side: str | None = None, split_special_tokens: bool | None = None,
                 **kwargs) -> BatchEncoding:
        """Tokenize a text, a pair, or a batch of either: ids plus the masks asked for, as lists or tensors.

        The arguments are transformers'; `truncation_side` may also be given per call.
        """
        if kwargs:
            raise TypeError(f"tokenizer() got unsupported arguments: {', '.join(sorted(kwargs))}")
        if text is None:
            raise ValueError("tokenizer() needs text: a string, or a list of strings for a batch")
        check_tensor_type(return_tensors)
        batched = self._is_batched(text, is_split_into_words)
        texts = list(text) if batched else [text]
        self._check_texts("text", texts, is_split_into_words)
        if not batched and not text_pair:
            text_pair = None  # transformers treats a single empty pair as no pair
        if text_pair is not None:
            pairs = list(text_pair) if batched else [text_pair]
            if batched and isinstance(text_pair, str):
                raise TypeError("for a batch of texts, text_pair must be a list of the same length, not a string")
            if len(pairs) != len(texts):
                raise ValueError(f"text has {len(texts)} items but text_pair has {len(pairs)}")
            self._check_texts("text_pair", pairs, is_split_into_words)
            inputs = list(zip(texts, pairs))
        else:
            inputs = texts

        padding_strategy, truncation_strategy, max_length = self._strategies(padding, truncation, max_length,
                                                                             pad_to_multiple_of)
        if truncation_strategy is not None:
            self._check_truncation_room(max_length, stride, add_special_tokens, text_pair is not None,
                                        return_overflowing_tokens)
        self._configure_backend(padding_strategy, truncation_strategy, max_length, stride, pad_to_multiple_of,
                                padding_side, truncation_side)
        split = self.split_special_tokens if split_special_tokens is None else bool(split_special_tokens)
        if self._tokenizer.encode_special_tokens != split:
            self._tokenizer.encode_special_tokens = split
        try:
            encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                     is_pretokenized=is_split_into_words)
        except Exception as err:  # the Rust side raises a bare Exception; say which settings caused it
            raise ValueError(f"tokenizing failed with truncation={truncation_strategy}, max_length={max_length}, "
                             f"padding={padding_strategy}: {err}") from None
        except BaseException as err:
            # A Rust panic (pyo3's PanicException is no Exception): a pair truncated so far that one text
            # keeps fewer tokens than `stride`, which transformers lets crash the call.
            if type(err).__name__ != "PanicException":
                raise
            raise ValueError(f"cannot truncate to max_length={max_length} with stride={stride}: {err}. Truncating "
                             "a pair leaves each text part of max_length; use a smaller stride, a larger max_length "
                             "or truncation='only_first' / 'only_second'") from None
        if return_overflowing_tokens:
            groups = [[e, *e.overflowing] for e in encodings]
            mapping = [i for i, group in enumerate(groups) for _ in group]
            encodings = [e for group in groups for e in group]

        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        data = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            data["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in encodings]
        if return_length:
            data["length"] = [len(e.ids) for e in encodings]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = mapping
        elif not batched and return_tensors is None:  # as transformers: only per-token lists lose the batch level
            data = {key: value[0] if value and isinstance(value[0], list) else value for key, value in data.items()}
        return BatchEncoding(data, encodings, tensor_type=return_tensors)

    @staticmethod
    def _is_batched(text, is_split_into_words):
        if is_split_into_words:
            return isinstance(text, (list, tuple)) and len(text) > 0 and isinstance(text[0], (list, tuple))
        return isinstance(text, (list, tuple))

    @staticmethod
    def _check_texts(name, texts, is_split_into_words):
        for i, item in enumerate(texts):
            if is_split_into_words:
                ok = isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item)
                expected = "a list of words (strings)"
            elif name == "text" and isinstance(item, tuple) and len(item) == 2:
                ok = all(isinstance(part, str) for part in item)  # (text, text_pair) given as one item
                expected = "a string or a (text, text_pair) pair of strings"
            else:
                ok = isinstance(item, str)
                expected = "a string"
            if not ok:
                raise TypeError(f"{name}[{i}] is {type(item).__name__} ({item!r:.60}), expected {expected}")

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """transformers' rules for turning padding / truncation / max_length into what to do."""
        if padding not in PADDING_STRATEGIES:
            raise ValueError(f"padding must be one of {list(PADDING_STRATEGIES)}, got {padding!r}")
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"truncation must be one of {list(TRUNCATION_STRATEGIES)}, got {truncation!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # max_length alone means truncate to it
        padding_strategy = PADDING_STRATEGIES[padding]
        truncation_strategy = TRUNCATION_STRATEGIES[truncation]
        if max_length is None:
            limited = self.model_max_length <= LARGE_INTEGER
            if padding_strategy == "max_length":
                padding_strategy = padding_strategy if limited else None
                max_length = self.model_max_length if limited else None
            if truncation_strategy is not None:
                truncation_strategy = truncation_strategy if limited else None
                max_length = self.model_max_length if limited else max_length
        if padding_strategy is not None and (self.pad_token is None or self.pad_token_id is None):
            raise ValueError(
                "Asking to pad but the tokenizer has no padding token. Set one first, for example "
                "`tokenizer.pad_token = tokenizer.eos_token`, or add one with "
                "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})`."
            )
        if (truncation_strategy and padding_strategy and pad_to_multiple_of and max_length
                and max_length % pad_to_multiple_of):
            raise ValueError(f"truncation length {max_length} is not a multiple of pad_to_multiple_of="
                             f"{pad_to_multiple_of}, so padding would exceed it")
        return padding_strategy, truncation_strategy, max_length

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens encoding adds to one sequence (or to a pair)."""
        post = self._tokenizer.post_processor
        return 0 if post is None else post.num_special_tokens_to_add(pair)

    def _check_truncation_room(self, max_length, stride, add_special_tokens, pair, overflowing):
        """Refuse a max_length the special tokens alone fill, and a stride that leaves no room to advance.

        transformers silently leaves such inputs untruncated (or fails in Rust with a bare message)."""
        special = self.num_special_tokens_to_add(pair) if add_special_tokens else 0
        room = max_length - special
        if room <= 0:
            raise ValueError(
                f"max_length={max_length} leaves no room for text: the special tokens alone take {special}. "
                f"Use max_length > {special}, or add_special_tokens=False."
            )
        if stride and stride >= room:
            raise ValueError(
                f"stride={stride} must be smaller than max_length={max_length} minus the {special} special tokens "
                f"(= {room}), or the overflowing windows would never advance; use a smaller stride or a larger "
                "max_length."
            )

    def _configure_backend(self, padding_strategy, truncation_strategy, max_length, stride, pad_to_multiple_of,
                           padding_side, truncation_side=None):
        if truncation_strategy is None:
            self._tokenizer.no_truncation()
        else:
            side = self._check_side("truncation_side", truncation_side or self.truncation_side)
            self._tokenizer.enable_truncation(max_length, stride=stride, strategy=truncation_strategy,
                                              direction=side)
        if padding_strategy is None:
            self._tokenizer.no_padding()
        else:
            side = self._check_side("padding_side", padding_side or self.padding_side)
            self._tokenizer.enable_padding(
                direction=side, pad_id=self.pad_token_id, pad_type_id=0, pad_token=self.pad_token,
                length=max_length if padding_strategy == "max_length" else None,
                pad_to_multiple_of=pad_to_multiple_of,
            )

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
               max_length=None, return_tensors=None, **kwargs):
        """The ids of one text (a list, or a (1, T) tensor with return_tensors)."""
        if not isinstance(text, str) and not kwargs.get("is_split_into_words"):
            raise TypeError(f"encode takes one string, got {type(text).__name__}; call the tokenizer for a batch")
        out = self(text, text_pair=text_pair, add_special_tokens=add_special_tokens, padding=padding,
                   truncation=truncation, max_length=max_length, return_tensors=return_tensors, **kwargs)
        return out["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        return self(text, text_pair=pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    def pad(self, encoded_inputs, padding=True, max_length=None, pad_to_multiple_of=None, padding_side=None,
            return_attention_mask=None, return_tensors=None, verbose=True) -> BatchEncoding:
        """Pad already-tokenized inputs (a dict of lists, or a list of dicts as a collator gets them)."""
        check_tensor_type(return_tensors)
        if isinstance(encoded_inputs, (list, tuple)):
            if not encoded_inputs or not isinstance(encoded_inputs[0], dict):
                raise TypeError("pad takes a dict of lists or a list of dicts with 'input_ids'")
            encoded_inputs = {key: [to_id_list(f[key]) for f in encoded_inputs] for key in encoded_inputs[0]}
        else:
            encoded_inputs = {key: to_id_list(value) for key, value in encoded_inputs.items()}
        if "input_ids" not in encoded_inputs:
            raise ValueError(f"pad needs 'input_ids'; got {list(encoded_inputs)}")
        single = bool(encoded_inputs["input_ids"]) and isinstance(encoded_inputs["input_ids"][0], int)
        if single:
            encoded_inputs = {key: [value] for key, value in encoded_inputs.items()}
        ids = encoded_inputs["input_ids"]
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_attention_mask and "attention_mask" not in encoded_inputs:
            encoded_inputs["attention_mask"] = [[1] * len(row) for row in ids]
        strategy = PADDING_STRATEGIES.get(padding, "invalid")
        if strategy == "invalid":
            raise ValueError(f"padding must be one of {list(PADDING_STRATEGIES)}, got {padding!r}")
        if strategy is not None:
            if self.pad_token_id is None:
                raise ValueError("Asking to pad but the tokenizer has no padding token. Set one first, for example "
                                 "`tokenizer.pad_token = tokenizer.eos_token`.")
            target = max((len(row) for row in ids), default=0)
            if strategy == "max_length":
                target = max_length if max_length is not None else self.model_max_length
            if pad_to_multiple_of and target % pad_to_multiple_of:
                target += pad_to_multiple_of - target % pad_to_multiple_of
            side = self._check_side("padding_side", padding_side or self.padding_side)
            fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0,
                    "special_tokens_mask": 1}
            for key, value in fill.items():
                if key in encoded_inputs:
                    encoded_inputs[key] = [pad_row(row, target, value, side) for row in encoded_inputs[key]]
        if single and return_tensors is None:
            encoded_inputs = {key: value[0] for key, value in encoded_inputs.items()}
        return BatchEncoding(encoded_inputs, tensor_type=return_tensors)

    # -- decoding --------------------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs):
        """Text of a sequence of ids (list, tuple, tensor, array); a batch of sequences gives a list of texts."""
        ids = to_id_list(token_ids)
        if isinstance(ids, int):
            ids = [ids]
        if ids and isinstance(ids[0], list):
            return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in ids]
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        # The clean-up is for WordPiece output; on BPE it would delete real spaces before punctuation.
        if clean and type(self._tokenizer.model).__name__ != "BPE":
            text = clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
                     **kwargs) -> list[str]:
        rows = to_id_list(sequences)
        if rows and not isinstance(rows[0], list):
            rows = [rows]
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in rows]

    # -- chat templates --------------------------------------------------------------------------------
    def get_chat_template(self, chat_template=None, tools=None) -> str:
        """The template to render: `chat_template` (a template, or the name of one of this tokenizer's
        named templates), else this tokenizer's template ("tool_use" when tools are given and it has one)."""
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template in templates:
                return templates[chat_template]
            if chat_template is None:
                name = "tool_use" if tools is not None and "tool_use" in templates else "default"
                if name not in templates:
                    raise ValueError(f"this tokenizer has the chat templates {sorted(templates)} and none is "
                                     "'default'; pick one with chat_template=<name>")
                return templates[name]
        template = chat_template if chat_template is not None else templates
        if not template:
            raise ValueError(
                f"the tokenizer {self.name_or_path!r} has no chat template, so apply_chat_template cannot format "
                "a conversation. Set tokenizer.chat_template to a Jinja template, or pass chat_template=."
            )
        return template

    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None,
                            add_generation_prompt: bool = False, continue_final_message=False, tokenize: bool = True,
                            padding=False, truncation: bool = False, max_length=None, return_tensors=None,
                            return_dict: bool = True, return_assistant_tokens_mask: bool = False,
                            tokenizer_kwargs=None, **template_kwargs):
        """Render a conversation (or a list of them) with the chat template.

        tokenize=False gives the text; otherwise a BatchEncoding (return_dict=True, transformers v5's default)
        or the ids (return_dict=False). The rendered text already holds the special tokens the template
        writes, so it is tokenized with add_special_tokens=False: no second BOS.

        return_assistant_tokens_mask adds "assistant_masks": 1 on the tokens of the assistant replies. With
        {% generation %} blocks the blocks say where replies are (as in transformers); without them each
        assistant message's content is found in the rendered chat message by message, and the end-of-turn
        token after it is included (transformers returns an all-zero mask there).
        """
        if not tokenize:
            return_dict = False
        if return_assistant_tokens_mask and not (tokenize and return_dict):
            raise ValueError("return_assistant_tokens_mask=True needs tokenize=True and return_dict=True")
        template = self.get_chat_template(chat_template, tools)
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot both be set: one continues "
                             "the last message, the other starts a new assistant message")
        if continue_final_message and return_assistant_tokens_mask:
            raise ValueError("continue_final_message cannot be combined with return_assistant_tokens_mask")
        if isinstance(conversation, (list, tuple)) and len(conversation) == 0:
            raise ValueError("cannot apply a chat template to an empty conversation; give at least one message")
        batched = isinstance(conversation, (list, tuple)) and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        conversations = [check_conversation(c, i if batched else None) for i, c in enumerate(conversations)]
        tools = self._check_tools(tools)
        compiled = compile_chat_template(template)
        variables = plain_template_data({**self.special_tokens_map, **template_kwargs})
        variables.update(tools=tools, documents=plain_template_data(documents))
        field = continue_final_message if isinstance(continue_final_message, str) else "content"
        tracked = return_assistant_tokens_mask and has_generation_blocks(template)
        end_markers = sorted((t.content for t in self.added_tokens_decoder.values() if t.special), key=len,
                             reverse=True)
        rendered, all_spans = [], []
        for messages in conversations:
            final_text = tag_final_message(messages, field) if continue_final_message else None
            if tracked:
                text, spans = render_tracking_generation(compiled, messages=messages,
                                                         add_generation_prompt=add_generation_prompt, **variables)
            else:
                text = compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)
                if return_assistant_tokens_mask:
                    def render(part):
                        return compiled.render(messages=part, add_generation_prompt=False, **variables)
                    spans = assistant_spans_by_message(render, messages, text, end_markers)
            rendered.append(cut_after_final_message(text, final_text) if continue_final_message else text)
            if return_assistant_tokens_mask:
                all_spans.append(spans)
        if not tokenize:
            return rendered if batched else rendered[0]
        out = self(rendered if batched else rendered[0], add_special_tokens=False, padding=padding,
                   truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                   **(tokenizer_kwargs or {}))
        if not return_dict:
            return out["input_ids"]
        if return_assistant_tokens_mask:
            masks = [token_mask_from_spans(e.offsets, spans) for e, spans in zip(out.encodings, all_spans)]
            out["assistant_masks"] = masks if batched or return_tensors else masks[0]
            if return_tensors:
                out.convert_to_tensors(return_tensors)
        return out

    @staticmethod
    def _check_tools(tools):
        """Tools as JSON-schema dicts; Python functions are described from their signature and docstring."""
        if tools is None:
            return None
        schemas = []
        for i, tool in enumerate(tools):
            if isinstance(tool, dict):
                schemas.append(tool)
            elif callable(tool):
                schemas.append(get_json_schema(tool))
            else:
                raise TypeError(f"tools[{i}] is {type(tool).__name__}; pass each tool as a JSON-schema dict "
                                "({'type': 'function', 'function': {'name': ..., 'parameters': ...}}) or as a "
                                "Python function with type hints and a Google-style docstring")
        return plain_template_data(schemas)

    # -- training ------------------------------------------------------------------------------------
    def train_new_from_iterator(self, text_iterator, vocab_size: int, length: int | None = None,
                                 new_special_tokens=None, special_tokens_map: dict | None = None, **trainer_kwargs):
        """A tokenizer of the same kind (model, normalizer, pre-tokenizer, decoder, special tokens) trained anew.

        `text_iterator` yields texts or batches (lists) of texts. `special_tokens_map` renames special tokens
        ({"</s>": "<|end|>"}), `new_special_tokens` adds more; other keyword arguments go to the `tokenizers`
        trainer (min_frequency, show_progress, ...).
        """
        rename = special_tokens_map or {}
        data = json.loads(self._tokenizer.to_str())
        added = data.pop("added_tokens")
        post_processor = data.pop("post_processor")
        model = data["model"]
        kind = model["type"]
        if kind not in TRAINERS:
            raise ValueError(f"cannot train a {kind} tokenizer; train_new_from_iterator supports {', '.join(TRAINERS)}")
        unk = None
        if kind == "BPE":
            model["vocab"], model["merges"] = {}, []
        elif kind == "Unigram":
            if model.get("unk_id") is not None:
                unk = rename.get(model["vocab"][model["unk_id"]][0], model["vocab"][model["unk_id"]][0])
                model["unk_id"], model["vocab"] = 0, [[unk, 0.0]]
        else:
            model["vocab"] = {}
        if model.get("unk_token") in rename:
            model["unk_token"] = rename[model["unk_token"]]
        backend = Tokenizer.from_str(json.dumps(data))

        special = [AddedToken(rename.get(t["content"], t["content"]), single_word=t["single_word"], lstrip=t["lstrip"],
                              rstrip=t["rstrip"], normalized=t["normalized"], special=True)
                   for t in added if t["special"] or kind == "Unigram"]
        special += [t if isinstance(t, AddedToken) else AddedToken(t, special=True, normalized=False)
                    for t in new_special_tokens or []]
        if kind == "BPE":
            for key in ("continuing_subword_prefix", "end_of_word_suffix"):
                if model.get(key) is not None:
                    trainer_kwargs.setdefault(key, model[key])
        if kind == "Unigram" and unk is not None:
            trainer_kwargs.setdefault("unk_token", unk)
        if uses_byte_level(data.get("pre_tokenizer")):
            trainer_kwargs.setdefault("initial_alphabet", pre_tokenizers.ByteLevel.alphabet())
        trainer = TRAINERS[kind](vocab_size=vocab_size, special_tokens=special, **trainer_kwargs)
        backend.train_from_iterator(text_iterator, trainer=trainer, length=length)

        if post_processor is not None:
            renumber_post_processor(post_processor, backend, rename)
            trained = json.loads(backend.to_str())
            trained["post_processor"] = post_processor
            backend = Tokenizer.from_str(json.dumps(trained))

        config = {k: v for k, v in self.tokenizer_config().items() if k != "added_tokens_decoder"}
        for name in SPECIAL_TOKEN_NAMES:
            if config.get(name) is not None:
                config[name] = rename.get(config[name], config[name])
        extra = [rename.get(t, t) for t in self._extra_special_tokens]
        extra += [token_content(t) for t in new_special_tokens or []]
        if extra:
            config["extra_special_tokens"] = list(dict.fromkeys(extra))
        if self.chat_template:
            config["chat_template"] = copy.deepcopy(self.chat_template)
        return type(self)(tokenizer_object=backend, name_or_path=self.name_or_path, **config)

    # -- saving ----------------------------------------------------------------------------------------
    def tokenizer_config(self) -> dict:
        """What tokenizer_config.json holds for this tokenizer."""
        config = {k: v for k, v in copy.deepcopy(self.init_kwargs).items() if k not in SPECIAL_TOKEN_NAMES}
        for key in ("additional_special_tokens", "extra_special_tokens", "chat_template"):
            config.pop(key, None)
        config.update({
            "added_tokens_decoder": {str(i): added_token_dict(t) for i, t in self.added_tokens_decoder.items()},
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "model_input_names": list(self.model_input_names),
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "tokenizer_class": self.tokenizer_class,
        })
        if self._manage_post_processor:  # else the post-processor in tokenizer.json decides, and must stay
            config.update(add_bos_token=self.add_bos_token, add_eos_token=self.add_eos_token)
        config.update({name: token for name, token in self._special_tokens.items() if token is not None})
        if self._extra_special_tokens:
            config["extra_special_tokens"] = list(self._extra_special_tokens)
        if self.chat_template:
            template = self.chat_template
            config["chat_template"] = ([{"name": k, "template": v} for k, v in template.items()]
                                       if isinstance(template, dict) else template)
        return config

    def save_pretrained(self, save_directory, **kwargs) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, each atomically.

        Everything is serialized before the first file is written, so a value that cannot be saved
        leaves the folder as it was.
        """
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_pretrained needs a directory, but {save_directory} is a file")
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        files = {
            TOKENIZER_FILE: self._tokenizer.to_str(pretty=True),
            TOKENIZER_CONFIG_FILE: dump_json(self.tokenizer_config(), TOKENIZER_CONFIG_FILE),
            SPECIAL_TOKENS_MAP_FILE: dump_json(self.special_tokens_map, SPECIAL_TOKENS_MAP_FILE),
        }
        added = {t: i for t, i in self.added_tokens_encoder.items() if i >= self.vocab_size}
        if added:  # the legacy list older loaders read added tokens from
            files[ADDED_TOKENS_FILE] = dump_json(added, ADDED_TOKENS_FILE)
        save_directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in files.items():
            write_atomic(save_directory / name, text.encode("utf-8"))
            written.append(str(save_directory / name))
        return tuple(written)

    def __repr__(self):
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
                f"special_tokens={self.special_tokens_map})")


def _special_token_property(name):
    return property(lambda self: self._get_special(name), lambda self, value: self._set_special(name, value),
                    doc=f"The {name.replace('_', ' ')} as a string, or None.")


def _special_id_property(name):
    return property(lambda self: self._get_special_id(name), lambda self, value: self._set_special_id(name, value),
                    doc=f"The id of the {name.replace('_', ' ')}, or None.")


for _name in SPECIAL_TOKEN_NAMES:
    setattr(PreTrainedTokenizer, _name, _special_token_property(_name))
    setattr(PreTrainedTokenizer, f"{_name}_id", _special_id_property(_name))


def pad_row(row: list, target: int, value, side: str) -> list:
    fill = [value] * max(target - len(row), 0)
    return row + fill if side == "right" else fill + row


def added_token_dict(token: AddedToken) -> dict:
    return {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
            "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special}


def dump_json(data, name) -> str:
    try:
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    except TypeError as err:
        raise TypeError(f"cannot save {name}: {err}") from None


def clean_up_tokenization(text: str) -> str:
    """Undo the spaces WordPiece decoding puts before punctuation and contractions."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text


PreTrainedTokenizerFast = PreTrainedTokenizer
# The family names: from_pretrained reads tokenizer.json, or builds the family's tokenizer from vocab files.
BertTokenizer = BertTokenizerFast = GPT2Tokenizer = GPT2TokenizerFast = PreTrainedTokenizer


class IncrementalDecoder:
    """Text of a growing sequence of ids, piece by piece, for streaming.

    `push(ids)` returns the text the new ids complete. It holds text back while it ends in an incomplete
    UTF-8 character (a Chinese character or emoji spread over several byte-level tokens decodes to U+FFFD
    until its last byte arrives), so no piece ever carries half a character. Only a short window of ids is
    decoded each time: ids from the previous emission on, compared with the text they already gave, which
    also keeps word-boundary spaces (WordPiece "##", SentencePiece "▁") right. `flush()` returns what is left.
    The pieces joined equal `tokenizer.decode(all_ids)`.
    """

    def __init__(self, tokenizer: PreTrainedTokenizer, skip_special_tokens: bool = False, **decode_kwargs):
        self.tokenizer = tokenizer
        self.decode_kwargs = {"skip_special_tokens": skip_special_tokens, **decode_kwargs}
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the window that is decoded again
        self.read_offset = 0  # ids up to here have been emitted

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, **self.decode_kwargs)

    def push(self, token_ids) -> str:
        ids = to_id_list(token_ids)
        self.ids.extend([ids] if isinstance(ids, int) else ids)
        seen = self._decode(self.ids[self.prefix_offset: self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        if len(text) <= len(seen) or text.endswith("\ufffd"):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return text[len(seen):]

    def flush(self) -> str:
        """The rest of the text, even an incomplete character (as U+FFFD, the way decode() shows it)."""
        seen = self._decode(self.ids[self.prefix_offset: self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(seen):]





def uses_byte_level(pre_tokenizer: dict | None) -> bool:
    if not pre_tokenizer:
        return False
    if pre_tokenizer["type"] == "Sequence":
        return any(uses_byte_level(p) for p in pre_tokenizer["pretokenizers"])
    return pre_tokenizer["type"] == "ByteLevel"


def renumber_post_processor(post: dict, backend: Tokenizer, rename: dict):
    """Point a serialized post-processor's special tokens at their ids in a newly trained vocabulary."""
    def id_of(token):
        index = backend.token_to_id(token)
        if index is None:
            raise ValueError(f"the post-processor adds {token!r}, which the trained vocabulary lacks; pass it in "
                             "new_special_tokens or rename it with special_tokens_map")
        return index

    for entry in (post.get("special_tokens") or {}).values():  # TemplateProcessing
        entry["tokens"] = [rename.get(t, t) for t in entry["tokens"]]
        entry["ids"] = [id_of(t) for t in entry["tokens"]]
        if "id" in entry:
            entry["id"] = rename.get(entry["id"], entry["id"])
    for key in ("cls", "sep"):  # BertProcessing, RobertaProcessing
        if key in post:
            token = rename.get(post[key][0], post[key][0])
            post[key] = [token, id_of(token)]
    for inner in post.get("processors") or []:  # Sequence
        renumber_post_processor(inner, backend, rename)


class AutoTokenizer:
    """AutoTokenizer.from_pretrained: every tokenizer here is a PreTrainedTokenizer."""

    def __init__(self):
        raise TypeError("AutoTokenizer is not instantiated; use AutoTokenizer.from_pretrained(name_or_path)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *inputs, gguf_file=None, **kwargs) -> PreTrainedTokenizer:
        return PreTrainedTokenizer.from_pretrained(pretrained_model_name_or_path, *inputs, gguf_file=gguf_file,
                                                   **kwargs)
