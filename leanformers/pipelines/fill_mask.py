"""fill-mask: the likeliest tokens for each mask token in a text, with the text each one gives."""

import warnings

import torch

from .base import Pipeline, check_text


class FillMaskPipeline(Pipeline):
    task = "fill-mask"
    parameters = {"top_k": 5, "targets": None, "tokenizer_kwargs": None}

    def __init__(self, model, tokenizer=None, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        if self.tokenizer.mask_token_id is None:
            raise ValueError("fill-mask needs a tokenizer with a mask token; this one defines none")

    def checked(self, params):
        params = super().checked(params)
        if params.get("targets") is not None:
            # From here on targets are token ids, resolved once per call rather than per input, so each
            # warning about a target comes once.
            params["targets"] = self.target_ids(params["targets"])
        return params

    def target_ids(self, targets) -> list[int]:
        """A vocabulary token's id; any other word stands for its first token, as transformers does."""
        ids = []
        for target in [targets] if isinstance(targets, str) else targets:
            index = self.tokenizer.backend_tokenizer.token_to_id(target)
            if index is None:
                first = self.tokenizer(target, add_special_tokens=False, truncation=True, max_length=1)["input_ids"]
                if not first:
                    warnings.warn(f"the target {target!r} gives no token; it is left out")
                    continue
                index = first[0]
                warnings.warn(f"the target {target!r} is not in the vocabulary; its first token "
                              f"{self.tokenizer.convert_ids_to_tokens(index)!r} stands for it")
            ids.append(index)
        if not ids:
            raise ValueError(f"targets={targets!r} gives no token to score; pass at least one word or token")
        return sorted(set(ids))

    def preprocess(self, item, tokenizer_kwargs=None, **params):
        check_text(item)
        encoded = dict(self.tokenizer(item, **(tokenizer_kwargs or {})))
        if self.tokenizer.mask_token_id not in encoded["input_ids"]:
            raise ValueError(f"no mask token ({self.tokenizer.mask_token}) in the input {item!r:.80}")
        return [encoded]

    def forward(self, features, **params):
        """One padded forward that scores the vocabulary only at the columns where some row holds a mask
        (logits_to_keep): the logits at the other positions, most of the forward's time with one mask per
        text, would be thrown away. Each feature gets the logits at its own masks, (masks, V), in order."""
        batch = self.padded(features)
        is_mask = batch["input_ids"] == self.tokenizer.mask_token_id  # (B, T)
        columns = is_mask.any(0).nonzero().flatten()  # (K,)
        with torch.inference_mode():
            logits = self.model(**batch, logits_to_keep=columns).logits  # (B, K, V)
        own = is_mask[:, columns]  # (B, K): which kept columns are the row's own masks
        return [{**feature, "logits": logits[i, own[i]].float().cpu()} for i, feature in enumerate(features)]

    def postprocess(self, outputs, item, top_k=5, targets=None, **params):
        ids = outputs[0]["input_ids"]
        masks = [i for i, token in enumerate(ids) if token == self.tokenizer.mask_token_id]
        probs = outputs[0]["logits"].softmax(-1)  # (masks, V): each mask scored on its own
        if targets is not None:
            probs = probs[:, targets]
        scores, picks = probs.topk(min(top_k, probs.shape[-1]))
        single = len(masks) == 1
        results = []
        for position, mask_scores, mask_picks in zip(masks, scores.tolist(), picks.tolist(), strict=True):
            row = []
            for score, pick in zip(mask_scores, mask_picks, strict=True):
                token = targets[pick] if targets is not None else pick
                filled = [*ids[:position], token, *ids[position + 1:]]
                # transformers drops pad tokens, and keeps special tokens when there are several masks so
                # the masks not filled here still show.
                filled = [t for t in filled if t != self.tokenizer.pad_token_id]
                row.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                            "sequence": self.tokenizer.decode(filled, skip_special_tokens=single)})
            results.append(row)
        return results[0] if single else results

    def __call__(self, inputs, batch_size=None, **params):
        results = super().__call__(inputs, batch_size, **params)
        # transformers returns a one-text list's result unwrapped.
        return results[0] if isinstance(inputs, list) and len(inputs) == 1 else results
