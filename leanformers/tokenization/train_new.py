"""What train_new_from_iterator needs beside the tokenizer: the `tokenizers` trainer of each model type,
whether a pre-tokenizer is byte-level, and a post-processor's special tokens renumbered for a new vocabulary.
"""

from tokenizers import Tokenizer, trainers

TRAINERS = {"BPE": trainers.BpeTrainer, "WordPiece": trainers.WordPieceTrainer,
            "WordLevel": trainers.WordLevelTrainer, "Unigram": trainers.UnigramTrainer}


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
