"""Backends from vocabulary files without tokenizer.json: BERT's WordPiece (vocab.txt) and GPT-2's
byte-level BPE (vocab.json + merges.txt), built as transformers' BertTokenizer and GPT2Tokenizer build them.
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

from .folder import TOKENIZER_FILE, read_config_object, token_content

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
