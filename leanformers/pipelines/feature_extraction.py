"""feature-extraction: the model's hidden states per token, or with pooling="mean" one sentence embedding.

Token embeddings come as transformers returns them, [1][T][H] per text (a (1, T, H) tensor with
return_tensors=True). pooling="mean" (with normalize=True for unit length) is sentence-transformers'
recipe for models such as all-MiniLM-L6-v2 and gives [H] per text (an (H,) tensor); transformers'
pipeline has no such argument.
"""

import torch

from .base import Pipeline, check_text

POOLINGS = (None, "mean")


class FeatureExtractionPipeline(Pipeline):
    task = "feature-extraction"
    parameters = {"truncation": None, "tokenize_kwargs": None, "return_tensors": False, "pooling": None,
                  "normalize": False}

    def checked(self, params):
        params = super().checked(params)
        if params.get("truncation") is not None and "truncation" in (params.get("tokenize_kwargs") or {}):
            raise ValueError("truncation is given twice: as an argument and in tokenize_kwargs")
        if params.get("pooling") not in POOLINGS:
            raise ValueError(f"pooling={params['pooling']!r} is not one of {', '.join(map(repr, POOLINGS))}")
        return params

    def preprocess(self, item, truncation=None, tokenize_kwargs=None, pooling=None, normalize=False, **params):
        check_text(item)
        if normalize and pooling is None:
            raise ValueError("normalize=True needs pooling='mean': it scales the sentence embedding to unit length")
        kwargs = {**(tokenize_kwargs or {}), **({"truncation": truncation} if truncation is not None else {})}
        return [dict(self.tokenizer(item, **kwargs))]

    def postprocess(self, outputs, item, return_tensors=False, pooling=None, normalize=False, **params):
        # The model's first output, as transformers takes it: last_hidden_state, or a head's logits. The
        # feature's own values are lists, so the first tensor is the model's.
        hidden = next(value for value in outputs[0].values() if torch.is_tensor(value))  # (T, H)
        if pooling is None:
            embedding = hidden[None]
        else:
            # The forward cut padding off, so every row here is a real token: the plain mean is the masked one.
            embedding = hidden.mean(0)
            if normalize:
                embedding = torch.nn.functional.normalize(embedding, dim=-1)
        return embedding if return_tensors else embedding.tolist()
