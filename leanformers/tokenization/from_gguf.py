"""Backends from a GGUF file's tokenizer metadata: byte-level BPE pre-tokenized the way llama.cpp reads
`tokenizer.ggml.pre`, or a SentencePiece 'llama' vocabulary (built by from_sentencepiece.py).
"""

import functools

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from .from_sentencepiece import SPM_NORMAL, SPM_UNKNOWN, spm_backend

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
    from ..gguf import gguf_metadata

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

    return tok, gguf_tokenizer_config(meta, tokens, add_bos_default=False)


def gguf_tokenizer_config(meta: dict, tokens: list[str], add_bos_default: bool) -> dict:
    """The tokenizer_config settings a GGUF file's metadata holds: BOS/EOS adding, special tokens, chat template."""
    config = {"add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default)),
              "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
              "tokenizer_class": "PreTrainedTokenizerFast"}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None and 0 <= token_id < len(tokens):
            config[name] = tokens[token_id]
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config


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
    config = gguf_tokenizer_config(meta, tokens, add_bos_default=True)
    if config.get("unk_token") is None and unk_id is not None:
        config["unk_token"] = tokens[unk_id]
    return backend, config
