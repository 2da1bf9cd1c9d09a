"""Backends from SentencePiece vocabularies: the `tokenizers` pipeline that tokenizes as SentencePiece does
(BPE with merges ranked by score, or Unigram), and a `tokenizer.model` file read with a small protobuf reader.

GGUF 'llama' vocabularies (from_gguf.py) are built with the same pipeline.
"""

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

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
