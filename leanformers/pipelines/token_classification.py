"""token-classification (alias ner): a label per token, or entities grouped from B-/I- tags, with the characters
they cover in the text.

aggregation_strategy, as in transformers:
- "none": every token with its best label, its index and its characters.
- "simple": neighbouring tokens whose labels name the same entity (B-PER then I-PER, ...) become one entity.
- "first" / "average" / "max": first each word gets one label (that of its first token, of its tokens' mean
  scores, or of its most confident token), then words are grouped as in "simple".
"""

from .base import Pipeline, check_text

STRATEGIES = ("none", "simple", "first", "average", "max")


def split_tag(label: str) -> tuple[str, str]:
    """("B" or "I", entity) of a label; a label without a B-/I- prefix continues an entity of its own name."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


class TokenClassificationPipeline(Pipeline):
    task = "token-classification"
    parameters = {"aggregation_strategy": "none", "ignore_labels": ("O",)}

    def checked(self, params):
        params = super().checked(params)
        strategy = params.get("aggregation_strategy", "none")
        if str(strategy).lower() not in STRATEGIES:
            raise ValueError(f"aggregation_strategy={strategy!r} is not one of {', '.join(STRATEGIES)}")
        return params

    def preprocess(self, item, **params):
        check_text(item)
        encoded = self.tokenizer(item, truncation=True, return_special_tokens_mask=True, return_offsets_mapping=True)
        return [dict(encoded)]

    def postprocess(self, outputs, item, aggregation_strategy="none", ignore_labels=("O",), **params):
        strategy = str(aggregation_strategy).lower()
        tokens = self.scored_tokens(outputs[0], item)
        if strategy in ("none", "simple"):
            units = [token_entity(t, self.model.config.id2label) for t in tokens]
            if strategy == "none":
                return [e for e in units if e["entity"] not in ignore_labels]
        else:
            units = [self.word_entity(word, strategy) for word in words_of(tokens)]
        return [e for e in self.group_entities(units) if e["entity_group"] not in ignore_labels]

    def scored_tokens(self, feature, text: str) -> list[dict]:
        """The text's tokens (special tokens left out): their string, label probabilities, characters, and
        whether each continues the word before it."""
        # WordPiece-style models mark a word's inner pieces ("##ing"), so a piece longer or shorter than the text
        # it covers is one; other tokenizers only know whether a space stands before the piece.
        marks_pieces = bool(getattr(self.tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None))
        scores = feature["logits"].softmax(-1)
        tokens = []
        for index, (token_id, special, (start, end)) in enumerate(zip(
                feature["input_ids"], feature["special_tokens_mask"], feature["offset_mapping"], strict=True)):
            if special:
                continue
            word, covered = self.tokenizer.convert_ids_to_tokens(token_id), text[start:end]
            if token_id == self.tokenizer.unk_token_id:  # "[UNK]" says nothing; show the text it stands for
                word, is_subword = covered, False
            elif marks_pieces:
                is_subword = len(word) != len(covered)
            else:
                is_subword = start > 0 and " " not in text[start - 1:start + 1]
            tokens.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": index,
                           "is_subword": is_subword})
        return tokens

    def word_entity(self, pieces: list[dict], strategy: str) -> dict:
        """One label for a word's tokens (strategy first, average or max)."""
        if strategy == "average":
            scores = sum(p["scores"] for p in pieces) / len(pieces)
        elif strategy == "max":
            scores = max(pieces, key=lambda p: float(p["scores"].max()))["scores"]
        else:
            scores = pieces[0]["scores"]
        best = int(scores.argmax())
        return {"entity": self.model.config.id2label[best], "score": float(scores[best]),
                "word": self.tokenizer.convert_tokens_to_string([p["word"] for p in pieces]),
                "start": pieces[0]["start"], "end": pieces[-1]["end"]}

    def group_entities(self, units: list[dict]) -> list[dict]:
        """Neighbouring tokens or words of one entity, joined; a B- tag always starts a new entity."""
        groups = []
        for unit in units:
            bi, tag = split_tag(unit["entity"])
            if groups and bi != "B" and split_tag(groups[-1][-1]["entity"])[1] == tag:
                groups[-1].append(unit)
            else:
                groups.append([unit])
        return [{"entity_group": split_tag(group[0]["entity"])[1],
                 "score": sum(u["score"] for u in group) / len(group),
                 "word": self.tokenizer.convert_tokens_to_string([u["word"] for u in group]),
                 "start": group[0]["start"], "end": group[-1]["end"]} for group in groups]


def token_entity(token: dict, id2label: dict) -> dict:
    best = int(token["scores"].argmax())
    return {"entity": id2label[best], "score": float(token["scores"][best]), "index": token["index"],
            "word": token["word"], "start": token["start"], "end": token["end"]}


def words_of(tokens: list[dict]) -> list[list[dict]]:
    words = []
    for token in tokens:
        if words and token["is_subword"]:
            words[-1].append(token)
        else:
            words.append([token])
    return words
