"""token-classification (ner) against transformers' pipeline."""

import json

import pytest
import torch
import transformers
from test_pipelines import assert_same

from leanformers import pipeline
from leanformers.pipelines import task_entry

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
NER_LABELS = {"id2label": dict(enumerate(TAGS)), "label2id": {tag: i for i, tag in enumerate(TAGS)}}
# A random BERT with one layer keeps tokens apart (deeper, its tokens all get one label)
VARIED = {"initializer_range": 0.3, "num_hidden_layers": 1}
NER_TEXTS = ["My name is Wolfgang and I live in Berlin.",
             "Hugging Face Inc. is a company based in New York City; its headquarters are in DUMBO.",
             "Arnold Schwarzenegger met Tchaikovsky's unaffordable naïveté in Llanfairpwllgwyngyll 🚀 yesterday!",
             "ok"]
STRATEGIES = ["none", "simple", "first", "average", "max"]



@pytest.fixture(scope="module")
def tagger(bert_pipeline_checkpoint):
    return bert_pipeline_checkpoint("BertForTokenClassification", **VARIED, **NER_LABELS)


@pytest.fixture(scope="module")
def bpe_tagger(tmp_path_factory):
    """A tiny BERT tagger over a byte-level BPE tokenizer, which does not mark a word's inner pieces (no "##"),
    so words are found from the spaces in the text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(NER_TEXTS * 3, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    folder = tmp_path_factory.mktemp("bpe-tagger")
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "model_max_length": 128}))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=backend.get_vocab_size(), hidden_size=32, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=128, **VARIED, **NER_LABELS)
    transformers.BertForTokenClassification(config).save_pretrained(folder)
    return folder


def both(task, folder, **kwargs):
    """transformers' pipeline (its scores made Python floats, as ours are) and ours."""
    ref = transformers.pipeline(task, model=str(folder), **kwargs)
    return (lambda *args, **call: plain(ref(*args, **call))), pipeline(task, model=str(folder), **kwargs)


def plain(value):
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") else value


# -- token-classification ------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_token_classification_matches_transformers(tagger, strategy):
    ref, ours = both("ner", tagger, aggregation_strategy=strategy)
    assert_same(ours(NER_TEXTS[2]), ref(NER_TEXTS[2]))
    for ignore in ([], ["O", "I-PER", "LOC"]):
        want = ref(NER_TEXTS, ignore_labels=ignore)
        assert_same(ours(NER_TEXTS, ignore_labels=ignore), want)
        assert sum(map(len, want)) > 0


def test_token_classification_strategies_differ_on_subwords(tagger):
    """The texts hold words of several pieces that the strategies label differently, so the parity test above
    tells the strategies apart; and the default leaves out the "O" tokens."""
    ours = pipeline("token-classification", model=str(tagger))
    words = {s: json.dumps(ours(NER_TEXTS, aggregation_strategy=s, ignore_labels=[])) for s in STRATEGIES[1:]}
    assert len(set(words.values())) == 4
    tokens = ours(NER_TEXTS, ignore_labels=[])
    assert {t["entity"] for text in tokens for t in text} >= {"O", "B-LOC", "I-LOC", "I-PER"}
    assert [[t for t in text if t["entity"] != "O"] for text in tokens] == ours(NER_TEXTS)
    tokens = tokens[2]
    unknown = [t for t in tokens if t["word"] == "🚀"]  # [UNK] shows the text it stands for
    assert len(unknown) == 1 and NER_TEXTS[2][unknown[0]["start"]:unknown[0]["end"]] == "🚀"


@pytest.mark.parametrize("strategy", ["none", "first", "average"])
@pytest.mark.filterwarnings("ignore:Tokenizer does not support real words")
def test_token_classification_without_subword_marks_matches_transformers(bpe_tagger, strategy):
    ref, ours = both("token-classification", bpe_tagger, aggregation_strategy=strategy, ignore_labels=[])
    want = ref(NER_TEXTS)
    assert_same(ours(NER_TEXTS), want)
    assert any(len(t["word"]) > 1 for text in want for t in text)


def test_token_classification_batched_equals_unbatched(tagger):
    ours = pipeline("ner", model=str(tagger), aggregation_strategy="average")
    assert_same(ours(NER_TEXTS * 3, batch_size=8), ours(NER_TEXTS * 3), atol=1e-5)
    assert_same(ours(NER_TEXTS, batch_size=8, ignore_labels=[]), ours(NER_TEXTS, ignore_labels=[]), atol=1e-5)


def test_token_classification_bad_input(tagger):
    assert task_entry("ner")[0] == "token-classification"
    ours = pipeline("ner", model=str(tagger))
    with pytest.raises(ValueError, match="aggregation_strategy='maximum' is not one of none, simple, first, average"):
        ours(NER_TEXTS[0], aggregation_strategy="maximum")
    with pytest.raises(ValueError, match="aggregation_strategy='words' is not one of"):
        pipeline("ner", model=str(tagger), aggregation_strategy="words")
    with pytest.raises(ValueError, match="the input is an empty string"):
        ours("")
    with pytest.raises(TypeError, match="takes no argument\\(s\\) top_k"):
        ours(NER_TEXTS[0], top_k=0)
    assert_same(ours(NER_TEXTS[0], aggregation_strategy="SIMPLE"), ours(NER_TEXTS[0], aggregation_strategy="simple"))
