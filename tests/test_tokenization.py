"""Tokenizer tests against transformers (the oracle) on SmolLM2's GGUF tokenizer and MiniLM's WordPiece."""

import json
import random
import sysconfig
from pathlib import Path

import jinja2
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from leanformers.hub import resolve_model_path
from leanformers.tokenization import AutoTokenizer, BatchEncoding, PreTrainedTokenizer, PreTrainedTokenizerFast

CORPUS_CHARS = 1_050_000


# -- fixtures ------------------------------------------------------------------------------------------
def smollm_gguf() -> Path:
    return resolve_model_path("smollm2-135m-instruct")


def minilm_dir() -> Path:
    return resolve_model_path("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def transformers_module():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def smol():
    return AutoTokenizer.from_pretrained("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def minilm():
    return AutoTokenizer.from_pretrained("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def hf_minilm(transformers_module):
    return transformers_module.AutoTokenizer.from_pretrained(str(minilm_dir()))


def synthetic_lines(rng: random.Random, n: int) -> list[str]:
    """Numbers, Chinese, emoji and mixed lines, the text where pre-tokenizers disagree most."""
    chinese = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"
    emoji = ["😀", "😂", "🤖", "🚀", "🎉", "👍🏽", "❤️", "🇫🇷", "👨‍👩‍👧", "🧪", "🔥", "✨", "🐍", "🌍", "⚡"]
    words = ["alpha", "beta", "the", "model", "token", "Hello", "world", "data", "value", "x"]
    lines = []
    for i in range(n):
        kind = i % 6
        if kind == 0:  # integers, decimals, thousands separators, dates, versions, hex
            parts = [str(rng.randint(0, 10 ** rng.randint(1, 12))), f"{rng.random() * 10 ** rng.randint(0, 6):.{rng.randint(0, 5)}f}",
                     f"{rng.randint(0, 10**9):,}", f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                     f"v{rng.randint(0, 20)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}", hex(rng.randint(0, 2**48)),
                     f"+{rng.randint(1, 99)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}", f"{rng.randint(0, 100)}%"]
            lines.append(" ".join(rng.sample(parts, rng.randint(2, len(parts)))))
        elif kind == 1:
            lines.append("".join(rng.choice(chinese) for _ in range(rng.randint(5, 60))) + rng.choice(["。", "，", "！", "？", ""]))
        elif kind == 2:
            lines.append(" ".join(rng.choice(emoji) + rng.choice(words) for _ in range(rng.randint(1, 10))))
        elif kind == 3:  # mixed scripts and digits without spaces
            lines.append("".join(rng.choice([rng.choice(chinese), str(rng.randint(0, 999)), rng.choice(words),
                                             rng.choice(emoji), " ", "\n", "\t", "  "]) for _ in range(rng.randint(5, 30))))
        elif kind == 4:
            lines.append(f"x{rng.randint(0, 99)} = {rng.randint(0, 10**6)} * {rng.random():.6f}  # {rng.choice(words)}")
        else:
            lines.append(f"Im Jahr {rng.randint(1000, 2999)} kostete es {rng.randint(1, 999)},{rng.randint(0, 99):02d} € — "
                         f"naïve café déjà vu, {rng.randint(1, 31)}. März; ¡olé! ½ ² Ⅻ ٣٤٥ १२३")
    return lines


def corpus_chunks() -> list[str]:
    """≥ 1 MB of text in docstring-sized chunks: stdlib sources plus synthetic numbers / Chinese / emoji."""
    rng = random.Random(1234)
    chunks: list[str] = []
    total = 0
    synthetic = synthetic_lines(rng, 6000)
    for start in range(0, len(synthetic), 4):
        chunk = "\n".join(synthetic[start: start + 4])
        chunks.append(chunk)
        total += len(chunk)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for block in text.split("\n\n"):
            if block.strip():
                chunks.append(block[:2000])
                total += len(chunks[-1])
        if total >= CORPUS_CHARS:
            break
    assert total >= CORPUS_CHARS
    return chunks


@pytest.fixture(scope="module")
def corpus():
    return corpus_chunks()


def tiny_tokenizer(**config) -> PreTrainedTokenizer:
    """A word-level tokenizer built in code: fast, and free to break."""
    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "<s>": 3, "</s>": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizer(tokenizer_object=backend, **{"unk_token": "[UNK]", "bos_token": "<s>",
                                                             "eos_token": "</s>", **config})


CONVERSATIONS = [
    [{"role": "user", "content": "What is 12345 + 678?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "你好，世界 🌍"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Count: 1 2 3\n\tdone"}],
    [{"role": "user", "content": "<|im_start|> is a token"}, {"role": "assistant", "content": "Yes."}],
]


# -- SmolLM2 (GGUF, byte-level BPE) ------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_ids_match_corrected_transformers_on_1mb_corpus(smol, hf_smol, corpus):
    ours = smol(corpus)["input_ids"]
    theirs = hf_smol(corpus)["input_ids"]
    assert len(ours) == len(theirs) == len(corpus)
    mismatched = [i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]
    assert not mismatched, f"{len(mismatched)} chunks differ, first: {corpus[mismatched[0]]!r}"


@pytest.mark.slow
def test_smollm2_decode_round_trips_corpus(smol, corpus):
    ids = smol(corpus)["input_ids"]
    assert smol.batch_decode(ids) == corpus


@pytest.mark.slow
def test_smollm2_digits_split_where_uncorrected_transformers_does_not(smol, hf_smol_raw, corpus):
    assert smol.tokenize("12345") == ["1", "2", "3", "4", "5"]
    assert len(smol.encode("12345")) == 5
    # Digits(individual_digits=True) splits every number off before the GPT-2 regex runs, so runs of
    # spaces before a number and numerals such as ½ ² tokenize differently.
    for text, ours in [("a  12", ["a", "ĠĠ", "1", "2"]), ("= ½ ²", ["=", "Ġ", "Â½", "Ġ", "Â²"])]:
        assert smol.tokenize(text) == ours
        assert hf_smol_raw.tokenize(text) != ours
    digit_chunks = [c for c in corpus if any(ch.isdigit() for ch in c)]
    ours = smol(digit_chunks)["input_ids"]
    raw = hf_smol_raw(digit_chunks)["input_ids"]
    differing = sum(a != b for a, b in zip(ours, raw, strict=True)) / len(digit_chunks)
    assert differing > 0.05, f"only {differing:.1%} of chunks with digits differ"


@pytest.mark.slow
def test_smollm2_special_tokens_match_transformers(smol, hf_smol):
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(smol, name) == getattr(hf_smol, name)
        assert getattr(smol, f"{name}_id") == getattr(hf_smol, f"{name}_id")
    assert smol.all_special_ids == hf_smol.all_special_ids
    assert smol.vocab_size == hf_smol.vocab_size and len(smol) == len(hf_smol)
    assert smol.get_vocab() == hf_smol.get_vocab()
    assert smol.add_bos_token is False
    text = "<|im_start|>user\nhi<|im_end|>"
    assert smol.encode(text) == hf_smol.encode(text)
    ids = smol.encode(text)
    assert smol.decode(ids, skip_special_tokens=True) == hf_smol.decode(ids, skip_special_tokens=True)
    assert smol.convert_ids_to_tokens(ids) == hf_smol.convert_ids_to_tokens(ids)
    assert smol.convert_tokens_to_ids(["<|im_end|>", "hi", "no-such-token"]) == \
        hf_smol.convert_tokens_to_ids(["<|im_end|>", "hi", "no-such-token"])
    assert smol.decode(torch.tensor(ids)) == smol.decode(np.array(ids)) == smol.decode(ids)


@pytest.mark.slow
@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("return_tensors", [None, "pt", "np"])
def test_smollm2_padding_and_truncation_match_transformers(smol, hf_smol, padding_side, return_tensors):
    texts = ["short", "a somewhat longer sentence with 1234 digits", "", "中文 and emoji 🚀🚀"]
    cases = [dict(padding=True), dict(padding="longest", truncation=True, max_length=6),
             dict(padding="max_length", max_length=20), dict(truncation=True, max_length=3, padding=True),
             dict(padding=True, pad_to_multiple_of=8)]
    for kwargs in cases:
        ours = smol(texts, padding_side=padding_side, return_tensors=return_tensors, **kwargs)
        theirs = hf_smol(texts, padding_side=padding_side, return_tensors=return_tensors, **kwargs)
        assert list(ours.keys()) == list(theirs.keys())
        for key in ours:
            if return_tensors is None:
                assert ours[key] == theirs[key], (kwargs, key)
            else:
                assert type(ours[key]) is type(theirs[key])
                assert tuple(ours[key].shape) == tuple(theirs[key].shape)
                assert ours[key].tolist() == theirs[key].tolist(), (kwargs, key)


@pytest.mark.slow
def test_smollm2_padding_side_attribute_and_single_text_tensors(smol, hf_smol):
    assert smol.padding_side == hf_smol.padding_side == "right"
    single = smol("hello there", return_tensors="pt")
    assert single.input_ids.shape == (1, len(smol.encode("hello there")))
    assert smol.encode("hello there", return_tensors="pt").tolist() == hf_smol.encode("hello there", return_tensors="pt").tolist()
    smol.padding_side = "left"
    try:
        batch = smol(["a", "a b c"], padding=True)
        assert batch["input_ids"][0][0] == smol.pad_token_id and batch["attention_mask"][0][0] == 0
    finally:
        smol.padding_side = "right"


@pytest.mark.slow
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_smollm2_chat_template_matches_transformers(smol, hf_smol, add_generation_prompt):
    for conversation in CONVERSATIONS:
        ours = smol.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=False)
        theirs = hf_smol.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, tokenize=False)
        assert ours == theirs
        out = smol.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt)
        theirs_out = hf_smol.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt)
        assert isinstance(out, BatchEncoding) and dict(out) == dict(theirs_out)  # v5: return_dict=True by default
        ids = smol.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, return_dict=False)
        assert ids == out["input_ids"]
        assert ids[0] == smol.convert_tokens_to_ids("<|im_start|>")  # exactly one, from the template
        assert ids.count(smol.bos_token_id) == ours.count("<|im_start|>")


@pytest.mark.slow
def test_smollm2_chat_template_batches_dicts_and_continuation(smol, hf_smol):
    ours = smol.apply_chat_template(CONVERSATIONS, add_generation_prompt=True, return_tensors="pt", padding=True,
                                    return_dict=True)
    theirs = hf_smol.apply_chat_template(CONVERSATIONS, add_generation_prompt=True, return_tensors="pt",
                                         padding=True, return_dict=True)
    assert isinstance(ours, BatchEncoding)
    assert ours.input_ids.tolist() == theirs["input_ids"].tolist()
    assert ours.attention_mask.tolist() == theirs["attention_mask"].tolist()
    assert smol.apply_chat_template(CONVERSATIONS, tokenize=False) == hf_smol.apply_chat_template(
        CONVERSATIONS, tokenize=False)
    prefill = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "The answer is"}]
    ours_text = smol.apply_chat_template(prefill, continue_final_message=True, tokenize=False)
    assert ours_text == hf_smol.apply_chat_template(prefill, continue_final_message=True, tokenize=False)
    assert ours_text.endswith("The answer is")


@pytest.mark.slow
def test_smollm2_save_pretrained_loads_in_transformers(smol, hf_smol, transformers_module, corpus, tmp_path):
    smol.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["special_tokens_map.json", "tokenizer.json",
                                                           "tokenizer_config.json"]
    reloaded = transformers_module.AutoTokenizer.from_pretrained(str(tmp_path))
    sample = [c for c in corpus[::7]][:1500]
    assert reloaded(sample)["input_ids"] == hf_smol(sample)["input_ids"]
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(reloaded, name) == getattr(smol, name)
    assert reloaded.padding_side == smol.padding_side
    for conversation in CONVERSATIONS:
        assert reloaded.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == \
            smol.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    ours_again = AutoTokenizer.from_pretrained(tmp_path)
    assert ours_again(sample)["input_ids"] == smol(sample)["input_ids"]
    assert ours_again.chat_template == smol.chat_template


@pytest.mark.slow
def test_smollm2_loads_what_transformers_saves(smol, hf_smol, corpus, tmp_path):
    hf_smol.save_pretrained(tmp_path)
    ours = AutoTokenizer.from_pretrained(tmp_path)
    sample = corpus[::11][:1500]
    assert ours(sample)["input_ids"] == hf_smol(sample)["input_ids"]
    assert ours.chat_template == hf_smol.chat_template
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(ours, name) == getattr(hf_smol, name)
    conversation = CONVERSATIONS[1]
    assert ours.apply_chat_template(conversation, add_generation_prompt=True, return_dict=False) == \
        hf_smol.apply_chat_template(conversation, add_generation_prompt=True, return_dict=False)


# -- MiniLM (tokenizer.json, WordPiece) ------------------------------------------------------------------
def minilm_sentences() -> list[str]:
    rng = random.Random(7)
    base = ["The quick brown fox jumps over the lazy dog.", "Don't stop believing!", "naïve café, déjà vu",
            "A man is playing a guitar.", "I can't believe it's not butter?", "Tokenization of 12,345.67 dollars",
            "Hello, WORLD; hello world", "这是一个中文句子。", "混合 English 和中文 123", "emoji 😀 and symbols ™ © ½"]
    words = "the of and a to in is you that it he was for on are as with his they I at be this have from".split()
    sentences = list(base)
    for _ in range(300):
        sentences.append(" ".join(rng.choice(words + ["中文", "東京", "unbelievable", "tokenizers", "42"])
                                  for _ in range(rng.randint(1, 40))))
    return sentences


@pytest.mark.slow
def test_minilm_matches_transformers(minilm, hf_minilm):
    sentences = minilm_sentences()
    for kwargs in [{}, dict(padding=True), dict(padding=True, truncation=True, max_length=16),
                   dict(padding="max_length", max_length=48, truncation=True), dict(truncation=True),
                   dict(padding=True, padding_side="left"), dict(padding=True, return_tensors="pt")]:
        ours, theirs = minilm(sentences, **kwargs), hf_minilm(sentences, **kwargs)
        assert list(ours.keys()) == list(theirs.keys()) == ["input_ids", "token_type_ids", "attention_mask"]
        for key in ours:
            a, b = ours[key], theirs[key]
            assert (a.tolist() if hasattr(a, "tolist") else a) == (b.tolist() if hasattr(b, "tolist") else b), (kwargs, key)
    assert minilm.model_max_length == hf_minilm.model_max_length == 512
    ids = minilm(sentences)["input_ids"]
    assert minilm.batch_decode(ids, skip_special_tokens=True) == hf_minilm.batch_decode(ids, skip_special_tokens=True)
    assert minilm.batch_decode(ids) == hf_minilm.batch_decode(ids)
    assert minilm.tokenize(sentences[7]) == hf_minilm.tokenize(sentences[7])
    assert minilm.all_special_ids == hf_minilm.all_special_ids


@pytest.mark.slow
def test_minilm_pairs_give_token_type_ids_like_transformers(minilm, hf_minilm):
    sentences = minilm_sentences()
    firsts, seconds = sentences[:150], sentences[150:300]
    for kwargs in [{}, dict(padding=True), dict(padding=True, truncation=True, max_length=20),
                   dict(truncation="longest_first", max_length=24, padding="max_length")]:
        ours, theirs = minilm(firsts, seconds, **kwargs), hf_minilm(firsts, seconds, **kwargs)
        assert dict(ours) == dict(theirs), kwargs
    questions = sentences[:10]  # short first halves, so only the second half needs cutting
    kwargs = dict(truncation="only_second", max_length=40, padding=True)
    assert dict(minilm(questions, seconds[:10], **kwargs)) == dict(hf_minilm(questions, seconds[:10], **kwargs))
    with pytest.raises(ValueError, match="max_length=4"):
        minilm(sentences[0], sentences[1], truncation="only_second", max_length=4)
    single = minilm("first part", "second part")
    assert single == hf_minilm("first part", "second part")
    assert set(single.token_type_ids) == {0, 1}


@pytest.mark.slow
def test_minilm_save_round_trips_through_transformers(minilm, hf_minilm, transformers_module, tmp_path):
    minilm.save_pretrained(tmp_path / "ours")
    reloaded = transformers_module.AutoTokenizer.from_pretrained(str(tmp_path / "ours"))
    sentences = minilm_sentences()
    assert dict(reloaded(sentences, padding=True)) == dict(hf_minilm(sentences, padding=True))
    hf_minilm.save_pretrained(tmp_path / "theirs")
    ours = AutoTokenizer.from_pretrained(tmp_path / "theirs")
    assert dict(ours(sentences[:50], sentences[50:100], padding=True)) == \
        dict(hf_minilm(sentences[:50], sentences[50:100], padding=True))


# -- behaviour on small tokenizers ------------------------------------------------------------------------
def test_batch_encoding_attribute_access_and_to():
    tok = tiny_tokenizer(pad_token="</s>")
    batch = tok(["hello world", "hello"], padding=True, return_tensors="pt")
    assert isinstance(batch, dict) and isinstance(batch, BatchEncoding)
    assert list(batch.keys()) == ["input_ids", "attention_mask"]
    assert batch.input_ids.tolist() == [[1, 2], [1, 4]]
    assert batch.attention_mask.tolist() == [[1, 1], [1, 0]]
    moved = batch.to("cpu")
    assert moved is batch and moved.input_ids.device.type == "cpu"
    assert batch.tokens(1) == ["hello", "</s>"]
    with pytest.raises(AttributeError, match="no 'labels'"):
        batch.labels
    single = tok("hello world")
    assert single.input_ids == [1, 2] and single.attention_mask == [1, 1]


def test_auto_tokenizer_alias_and_len():
    assert PreTrainedTokenizerFast is PreTrainedTokenizer
    tok = tiny_tokenizer()
    assert len(tok) == 5 and tok.vocab_size == 5
    assert tok.get_vocab()["world"] == 2
    tok.pad_token_id = 4
    assert tok.pad_token == "</s>" and tok.pad_token_id == 4
    tok.add_bos_token = True
    assert tok.encode("hello") == [3, 1]
    tok.add_bos_token = False
    assert tok.encode("hello") == [1]


def test_pad_pads_features_like_a_collator():
    tok = tiny_tokenizer(pad_token="</s>", padding_side="left")
    features = [{"input_ids": [1, 2, 1]}, {"input_ids": [2]}]
    out = tok.pad(features, return_tensors="pt")
    assert out.input_ids.tolist() == [[1, 2, 1], [4, 4, 2]]
    assert out.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert tok.pad({"input_ids": [1]}, padding="max_length", max_length=3)["input_ids"] == [4, 4, 1]


def test_padding_without_pad_token_names_the_fix():
    tok = tiny_tokenizer()
    assert tok.pad_token is None
    with pytest.raises(ValueError, match=r"tokenizer\.pad_token = tokenizer\.eos_token"):
        tok(["hello", "hello world"], padding=True)
    with pytest.raises(ValueError, match=r"tokenizer\.pad_token = tokenizer\.eos_token"):
        tok.pad([{"input_ids": [1]}, {"input_ids": [1, 2]}])
    tok.pad_token = tok.eos_token
    assert tok(["hello", "hello world"], padding=True)["input_ids"] == [[1, 4], [1, 2]]


def test_ragged_tensors_ask_for_padding():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="padding=True"):
        tok(["hello", "hello world"], return_tensors="pt")
    with pytest.raises(ValueError, match="return_tensors"):
        tok("hello", return_tensors="tf")


def test_non_string_in_batch_is_named():
    tok = tiny_tokenizer()
    with pytest.raises(TypeError, match=r"text\[1\] is int"):
        tok(["hello", 3, "world"])
    with pytest.raises(TypeError, match=r"text_pair\[0\] is NoneType"):
        tok(["hello"], [None])


def test_folder_without_tokenizer_files_names_folder_and_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError) as err:
        AutoTokenizer.from_pretrained(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "tokenizer.json" in message and "tokenizer_config.json" in message


def test_malformed_tokenizer_config_is_named(tmp_path):
    tiny_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 12,')
    with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
        AutoTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
    "{{ messages.append(1) }}",
])
def test_chat_template_cannot_reach_python_internals(template):
    tok = tiny_tokenizer()
    with pytest.raises(jinja2.exceptions.SecurityError):
        tok.apply_chat_template([{"role": "user", "content": "hi"}], chat_template=template, tokenize=False)


def test_chat_template_helpers_and_errors():
    tok = tiny_tokenizer()
    conversation = [{"role": "user", "content": "hello"}]
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template(conversation)
    tok.chat_template = ("{% for m in messages %}{{ bos_token }}{{ m['role'] }}: {{ m['content'] | tojson }}\n"
                         "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
    assert tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True) == \
        '<s>user: "hello"\nassistant:'
    assert tok.apply_chat_template(conversation, return_dict=False) == tok.encode('<s>user: "hello"',
                                                                                  add_special_tokens=False)
    with pytest.raises(ValueError, match="'role'"):
        tok.apply_chat_template([{"content": "hello"}])
    with pytest.raises(TypeError, match="expected a dict"):
        tok.apply_chat_template(["hello"])
    with pytest.raises(jinja2.exceptions.TemplateError, match="only users"):
        tok.apply_chat_template(conversation, chat_template="{{ raise_exception('only users may speak') }}")


def test_save_failure_leaves_folder_unchanged(tmp_path, monkeypatch):
    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    tok.init_kwargs["not_json"] = object()  # tokenizer_config.json cannot be written
    with pytest.raises(TypeError, match="tokenizer_config.json"):
        tok.save_pretrained(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    del tok.init_kwargs["not_json"]

    import leanformers.files as files_module

    calls = []

    def failing_replace(src, dst):  # the disk fails while the second file is renamed into place
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_replace(src, dst)

    real_replace = files_module.os.replace
    tok.model_max_length = 77
    monkeypatch.setattr(files_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        tok.save_pretrained(tmp_path)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before)  # no temporary files left behind
    assert after["tokenizer_config.json"] == before["tokenizer_config.json"]  # not half-written
    assert AutoTokenizer.from_pretrained(tmp_path).encode("hello world") == [1, 2]


def test_save_into_a_file_path_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        tiny_tokenizer().save_pretrained(target)


def test_unknown_gguf_pre_tokenizer_is_a_clear_error():
    from leanformers.tokenization.from_gguf import gguf_pre_tokenizer

    with pytest.raises(ValueError, match="tokenizer.ggml.pre='made-up'.*smollm"):
        gguf_pre_tokenizer("made-up", "model.gguf")
    split = gguf_pre_tokenizer("llama-bpe", "model.gguf").pre_tokenize_str("Hello 12345 world")
    assert [piece for piece, _ in split] == ["Hello", "Ġ", "123", "45", "Ġworld"]
    split = gguf_pre_tokenizer("smollm", "model.gguf").pre_tokenize_str("ab 12")
    assert [piece for piece, _ in split] == ["ab", "Ġ", "1", "2"]


def test_post_processor_from_tokenizer_json_is_kept():
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hi": 3}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                           special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tok = PreTrainedTokenizer(tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    assert tok.encode("hi") == [1, 3, 2]
    assert tok.encode("hi", add_special_tokens=False) == [3]
    assert tok.decode([1, 3, 2], skip_special_tokens=True) == "hi"


# -- the option grid: SmolLM2, MiniLM and a GPT-2-style byte-level BPE against transformers ----------------
@pytest.fixture(scope="module")
def gpt2_style_dir(tmp_path_factory):
    """A GPT-2-style tokenizer (byte-level BPE, <|endoftext|>) trained on part of the corpus, saved as a
    tokenizer.json folder that both libraries load."""
    from tokenizers import decoders, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus_chunks()[::8], trainer=trainer)
    folder = tmp_path_factory.mktemp("gpt2-style")
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", '
        '"unk_token": "<|endoftext|>", "model_max_length": 1024}')
    return folder


@pytest.fixture(scope="module")
def gpt2_pair(gpt2_style_dir, transformers_module):
    ours = AutoTokenizer.from_pretrained(gpt2_style_dir)
    theirs = transformers_module.AutoTokenizer.from_pretrained(str(gpt2_style_dir))
    ours.pad_token = ours.eos_token
    theirs.pad_token = theirs.eos_token
    return ours, theirs


@pytest.fixture(scope="module")
def pairs(request, smol, hf_smol, minilm, hf_minilm, gpt2_pair):
    return {"smollm2": (smol, hf_smol), "minilm": (minilm, hf_minilm), "gpt2": gpt2_pair}


GRID_TEXTS = ["Hello world, this is a test.", "x = 12345 # 中文 and emoji 🚀🚀", "  spaces\tand\nlines  ", "short",
              "naïve café déjà vu ½ ² — ok", "def f(a, b):\n    return a + b  # sum of 2 numbers"]
GRID_PAIRS = ["a second text", "what is 2 + 2?", "你好", "another, rather longer second text with many words in it",
              "🚀", "x"]
GRID_OPTIONS = {
    "plain": {},
    "pad_true": dict(padding=True),
    "pad_longest_trunc": dict(padding="longest", truncation=True, max_length=9),
    "pad_max_length": dict(padding="max_length", max_length=40, truncation=True),
    "trunc_longest_first": dict(truncation="longest_first", max_length=10),
    "trunc_only_first": dict(truncation="only_first", max_length=14),
    "trunc_only_second": dict(truncation="only_second", max_length=14),
    "trunc_false": dict(truncation=False, padding=False),
    "max_length_alone": dict(max_length=7),
    "overflow_stride": dict(truncation=True, max_length=8, stride=2, return_overflowing_tokens=True, padding=True),
    "multiple_of": dict(padding=True, pad_to_multiple_of=8),
    "left_pad_pt": dict(padding=True, padding_side="left", return_tensors="pt"),
    "np_trunc": dict(padding=True, truncation=True, max_length=12, return_tensors="np"),
    "all_returns": dict(return_token_type_ids=True, return_attention_mask=False, return_special_tokens_mask=True,
                        return_offsets_mapping=True, return_length=True, padding=True),
    "no_special": dict(add_special_tokens=False, padding=True, return_special_tokens_mask=True),
    "no_type_ids": dict(return_token_type_ids=False, padding=True, return_offsets_mapping=True),
}


def as_plain(value):
    return value.tolist() if hasattr(value, "tolist") else value


def assert_same_encoding(ours, theirs, where):
    assert list(ours.keys()) == list(theirs.keys()), where
    for key in ours:
        if hasattr(theirs[key], "shape"):
            assert type(ours[key]) is type(theirs[key]), (where, key)
            assert tuple(ours[key].shape) == tuple(theirs[key].shape), (where, key)
        assert as_plain(ours[key]) == as_plain(theirs[key]), (where, key)
    assert len(ours.encodings) == len(theirs.encodings), where
    for i, (a, b) in enumerate(zip(ours.encodings, theirs.encodings, strict=True)):
        assert ours.tokens(i) == theirs.tokens(i), (where, i)
        assert ours.word_ids(i) == theirs.word_ids(i), (where, i)
        assert ours.sequence_ids(i) == theirs.sequence_ids(i), (where, i)
        for token in range(len(a.ids)):
            assert ours.token_to_chars(i, token) == theirs.token_to_chars(i, token), (where, i, token)
        for char in range(0, 40, 3):
            assert ours.char_to_token(i, char) == theirs.char_to_token(i, char), (where, i, char)


def compare_call(ours, theirs, args, kwargs, where):
    try:
        expected = theirs(*args, **kwargs)
    except BaseException as err:  # transformers refuses it (or the Rust side panics): we must refuse clearly
        if not isinstance(err, Exception) and type(err).__name__ != "PanicException":
            raise
        with pytest.raises((ValueError, TypeError)):
            ours(*args, **kwargs)
        return f"refused: {type(err).__name__}"
    assert_same_encoding(ours(*args, **kwargs), expected, where)
    return None


@pytest.mark.slow
@pytest.mark.parametrize("option", list(GRID_OPTIONS))
@pytest.mark.parametrize("inputs", ["batch", "batch_pairs", "single", "single_pair"])
@pytest.mark.parametrize("name", ["smollm2", "minilm", "gpt2"])
def test_call_options_match_transformers(pairs, name, inputs, option):
    ours, theirs = pairs[name]
    kwargs = GRID_OPTIONS[option]
    args = {"batch": (GRID_TEXTS,), "batch_pairs": (GRID_TEXTS, GRID_PAIRS), "single": (GRID_TEXTS[1],),
            "single_pair": (GRID_TEXTS[5], GRID_PAIRS[3])}[inputs]
    if option == "trunc_only_second" and len(args) == 1:
        kwargs = dict(kwargs, truncation="only_first")
    refused = compare_call(ours, theirs, args, kwargs, (name, inputs, option))
    # only_first / only_second cannot cut a text that is already the shorter one; a pair cut to 8 tokens
    # leaves one text fewer tokens than the stride (transformers panics in Rust there)
    allowed = ("trunc_only_first", "trunc_only_second") + (("overflow_stride",) if "pair" in inputs else ())
    assert refused is None or option in allowed, refused


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "minilm", "gpt2"])
def test_split_into_words_and_truncation_side_match_transformers(pairs, name):
    ours, theirs = pairs[name]
    words = [text.split() for text in GRID_TEXTS]
    for kwargs in [{}, dict(padding=True), dict(truncation=True, max_length=6, padding=True)]:
        assert_same_encoding(ours(words, is_split_into_words=True, **kwargs),
                             theirs(words, is_split_into_words=True, **kwargs), (name, "words", kwargs))
        assert_same_encoding(ours(words[0], is_split_into_words=True, **kwargs),
                             theirs(words[0], is_split_into_words=True, **kwargs), (name, "one", kwargs))
    kwargs = dict(truncation=True, max_length=6, padding=True)
    theirs.truncation_side = "left"
    try:
        expected = theirs(GRID_TEXTS, GRID_PAIRS, **kwargs)
    finally:
        theirs.truncation_side = "right"
    assert_same_encoding(ours(GRID_TEXTS, GRID_PAIRS, truncation_side="left", **kwargs), expected, name)
    ours.truncation_side = "left"
    try:
        assert_same_encoding(ours(GRID_TEXTS, GRID_PAIRS, **kwargs), expected, name)
    finally:
        ours.truncation_side = "right"
    assert ours(GRID_TEXTS, **kwargs)["input_ids"] != ours(GRID_TEXTS, truncation_side="left", **kwargs)["input_ids"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "minilm", "gpt2"])
def test_decode_options_match_transformers(pairs, name):
    ours, theirs = pairs[name]
    ids = theirs(GRID_TEXTS, GRID_PAIRS)["input_ids"]
    for skip in (False, True):
        for clean in (None, False, True):
            assert ours.batch_decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean) == \
                theirs.batch_decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean), (skip, clean)
            assert ours.decode(ids[1], skip_special_tokens=skip, clean_up_tokenization_spaces=clean) == \
                theirs.decode(ids[1], skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
    assert ours.decode(torch.tensor(ids[0])) == theirs.decode(torch.tensor(ids[0]))
    assert ours.convert_ids_to_tokens(ids[0]) == theirs.convert_ids_to_tokens(ids[0])
    assert ours.convert_ids_to_tokens(ids[0], skip_special_tokens=True) == \
        theirs.convert_ids_to_tokens(ids[0], skip_special_tokens=True)
    tokens = ours.convert_ids_to_tokens(ids[0])
    assert ours.convert_tokens_to_string(tokens) == theirs.convert_tokens_to_string(tokens)
    for text in GRID_TEXTS:
        assert ours.tokenize(text) == theirs.tokenize(text)
        assert ours.tokenize(text, add_special_tokens=True) == theirs.tokenize(text, add_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "minilm", "gpt2"])
def test_vocabulary_and_added_tokens_match_transformers(pairs, name):
    import copy

    ours, theirs = (copy.deepcopy(t) for t in pairs[name])
    for attr in ("vocab_size", "bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
                 "mask_token", "bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id", "sep_token_id",
                 "cls_token_id", "mask_token_id", "all_special_tokens", "all_special_ids"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert len(ours) == len(theirs) and ours.get_vocab() == theirs.get_vocab()
    assert ours.add_tokens(["<tool>", "newword", "<tool>"]) == theirs.add_tokens(["<tool>", "newword", "<tool>"]) == 2
    assert ours.add_tokens(["<sep2>"], special_tokens=True) == theirs.add_tokens(["<sep2>"], special_tokens=True)
    assert ours.add_special_tokens({"pad_token": "<mypad>"}) == theirs.add_special_tokens({"pad_token": "<mypad>"}) == 1
    assert ours.pad_token_id == theirs.pad_token_id == len(theirs) - 1
    assert len(ours) == len(theirs) and ours.vocab_size == theirs.vocab_size
    assert ours.get_vocab() == theirs.get_vocab()
    assert set(ours.all_special_tokens) == set(theirs.all_special_tokens)
    text = "a <tool> call with newword and <sep2><mypad>"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert ours.tokenize(text) == theirs.tokenize(text)
    batch = ours([text, "x"], padding=True)
    assert batch["input_ids"] == theirs([text, "x"], padding=True)["input_ids"]
    assert ours.decode(batch["input_ids"][1], skip_special_tokens=True) == \
        theirs.decode(batch["input_ids"][1], skip_special_tokens=True)
    assert ours.convert_tokens_to_ids(["<tool>", "<mypad>"]) == theirs.convert_tokens_to_ids(["<tool>", "<mypad>"])


@pytest.mark.slow
def test_gpt2_style_ids_and_decode_match_transformers_on_1mb_corpus(gpt2_pair, corpus):
    ours, theirs = gpt2_pair
    ids = ours(corpus)["input_ids"]
    assert ids == theirs(corpus)["input_ids"]
    assert ours.batch_decode(ids) == theirs.batch_decode(ids) == corpus


@pytest.mark.slow
def test_minilm_ids_and_decode_match_transformers_on_1mb_corpus(minilm, hf_minilm, corpus):
    ids = minilm(corpus)["input_ids"]
    assert ids == hf_minilm(corpus)["input_ids"]
    assert minilm.batch_decode(ids, skip_special_tokens=True) == hf_minilm.batch_decode(ids, skip_special_tokens=True)


def test_max_length_smaller_than_special_tokens_is_refused(minilm):
    with pytest.raises(ValueError, match=r"max_length=2 leaves no room.*special tokens alone take 2"):
        minilm("hello world", truncation=True, max_length=2)
    with pytest.raises(ValueError, match=r"max_length=3 leaves no room.*take 3"):
        minilm("hello", "world", truncation=True, max_length=3)
    assert minilm("hello world", truncation=True, max_length=2, add_special_tokens=False)["input_ids"] == [7592, 2088]


def test_stride_not_below_max_length_is_refused(minilm):
    with pytest.raises(ValueError, match=r"stride=6 must be smaller than max_length=8 minus the 2 special tokens"):
        minilm("a b c d e f g h i j k", truncation=True, max_length=8, stride=6, return_overflowing_tokens=True)
    out = minilm("a b c d e f g h i j k", truncation=True, max_length=8, stride=5, return_overflowing_tokens=True)
    assert out["overflow_to_sample_mapping"] == [0] * 6  # 11 words, windows of 6 advancing by 1
    # a pair cut to 8 leaves the longer text 3 tokens, fewer than the stride: transformers panics in Rust
    with pytest.raises(ValueError, match="stride=3"):
        minilm(["a b c d e f"], ["g h i j k l m"], truncation=True, max_length=8, stride=3,
               return_overflowing_tokens=True)


# -- chat templates: masks, defaults, tools ------------------------------------------------------------------
THREE_TURNS = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And 12 * 12?"},
    {"role": "assistant", "content": "144, which is 12²."},
    {"role": "user", "content": "Say 'assistant' in 中文 🌍"},
    {"role": "assistant", "content": "assistant = 助手 🤖"},
]


@pytest.mark.slow
def test_smollm2_assistant_mask_covers_exactly_the_replies(smol):
    out = smol.apply_chat_template(THREE_TURNS, return_assistant_tokens_mask=True,
                                   tokenizer_kwargs={"return_offsets_mapping": True})
    text = smol.apply_chat_template(THREE_TURNS, tokenize=False)
    assert out["input_ids"] == smol(text, add_special_tokens=False)["input_ids"]
    # the expected character spans: each reply's content and the <|im_end|> the template closes it with
    expected, start = [], 0
    for message in THREE_TURNS:
        if message["role"] == "assistant":
            at = text.index(f"<|im_start|>assistant\n{message['content']}<|im_end|>", start)
            at += len("<|im_start|>assistant\n")
            expected.append((at, at + len(message["content"]) + len("<|im_end|>")))
            start = expected[-1][1]
    masked_chars = set()
    for (a, b), m in zip(out["offset_mapping"], out["assistant_masks"], strict=True):
        inside = any(s <= a and b <= e for s, e in expected)
        assert m == int(inside), (text[a:b], m)
        if m:
            masked_chars.update(range(a, b))
    assert masked_chars == {c for s, e in expected for c in range(s, e)}
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert smol.decode(masked) == "Paris.<|im_end|>144, which is 12².<|im_end|>assistant = 助手 🤖<|im_end|>"
    assert masked.count(smol.eos_token_id) == 3  # EOS is learned, not masked away


@pytest.mark.slow
def test_assistant_mask_batched_truncated_and_tensors(smol):
    batch = [THREE_TURNS, THREE_TURNS[:3]]
    out = smol.apply_chat_template(batch, return_assistant_tokens_mask=True, padding=True, return_tensors="pt")
    assert out["assistant_masks"].shape == out["input_ids"].shape
    single = smol.apply_chat_template(THREE_TURNS[:3], return_assistant_tokens_mask=True)
    n = len(single["input_ids"])
    assert out["assistant_masks"][1, :n].tolist() == single["assistant_masks"]
    assert out["assistant_masks"][1, n:].sum() == 0  # padding is never a reply
    cut = smol.apply_chat_template(THREE_TURNS, return_assistant_tokens_mask=True, truncation=True, max_length=30)
    full = smol.apply_chat_template(THREE_TURNS, return_assistant_tokens_mask=True)
    assert cut["assistant_masks"] == full["assistant_masks"][:30]
    with pytest.raises(ValueError, match="return_dict=True"):
        smol.apply_chat_template(THREE_TURNS, return_assistant_tokens_mask=True, return_dict=False)


GENERATION_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|im_end|>{% endgeneration %}"
    "{% else %}{{ m['content'] }}<|im_end|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.slow
def test_generation_block_mask_matches_transformers(smol, hf_smol):
    for conversation in (THREE_TURNS, [THREE_TURNS, THREE_TURNS[:3]]):
        kwargs = dict(chat_template=GENERATION_TEMPLATE, return_assistant_tokens_mask=True)
        if isinstance(conversation[0], list):
            kwargs["padding"] = True
        ours = smol.apply_chat_template(conversation, **kwargs)
        theirs = hf_smol.apply_chat_template(conversation, **kwargs)
        assert dict(ours) == dict(theirs)
    # on the stock template transformers' mask is all zeros; ours finds the same replies as the markers do
    def masked_ids(out):
        return [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]

    stock = masked_ids(smol.apply_chat_template(THREE_TURNS, return_assistant_tokens_mask=True))
    marked = masked_ids(smol.apply_chat_template(THREE_TURNS, return_assistant_tokens_mask=True,
                                                 chat_template=GENERATION_TEMPLATE))
    assert stock == marked and len(stock) > 10
    assert sum(hf_smol.apply_chat_template(THREE_TURNS, return_assistant_tokens_mask=True)["assistant_masks"]) == 0


def test_chat_template_defaults_and_no_double_bos():
    tok = tiny_tokenizer(add_bos_token=True)
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}"
    conversation = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]
    out = tok.apply_chat_template(conversation)
    assert isinstance(out, BatchEncoding) and out["input_ids"] == [3, 1, 2]  # one BOS, from the template
    assert tok(tok.apply_chat_template(conversation, tokenize=False))["input_ids"] == [3, 3, 1, 2]
    assert tok(tok.apply_chat_template(conversation, tokenize=False), add_special_tokens=False)["input_ids"] == [3, 1, 2]
    assert tok.apply_chat_template(conversation, return_dict=False) == [3, 1, 2]
    assert tok.apply_chat_template(conversation, return_assistant_tokens_mask=True)["assistant_masks"] == [0, 0, 1]
    with pytest.raises(ValueError, match="empty conversation"):
        tok.apply_chat_template([])
    with pytest.raises(ValueError, match="no 'content'"):
        tok.apply_chat_template([{"role": "user"}])
    with pytest.raises(ValueError, match="no 'role'"):
        tok.apply_chat_template([{"content": "hi"}])
    assert tok.apply_chat_template([{"role": "assistant", "tool_calls": [{"name": "f"}]}], tokenize=False) == "<s> "


def get_current_temperature(location: str, unit: str = "celsius", days: list[int] | None = None) -> float:
    """Get the current temperature at a location.

    Args:
        location: The location, as "City, Country"
        unit: The unit to return the temperature in. (choices: ["celsius", "fahrenheit"])
        days: Which days
            ahead to include

    Returns:
        The temperature as a float.
    """
    return 22.0


def test_tools_as_python_functions_match_transformers(transformers_module):
    from transformers.utils import get_json_schema as hf_get_json_schema

    from leanformers.tokenization import get_json_schema

    assert get_json_schema(get_current_temperature) == hf_get_json_schema(get_current_temperature)
    tok = tiny_tokenizer()
    template = "{{ tools | tojson }}|{% for m in messages %}{{ m['content'] }}{% endfor %}"
    conversation = [{"role": "user", "content": "hello"}]
    text = tok.apply_chat_template(conversation, tools=[get_current_temperature], chat_template=template, tokenize=False)
    assert text.startswith('[{"type": "function", "function": {"name": "get_current_temperature"')

    def undocumented(x: int):
        return x

    with pytest.raises(ValueError, match="no docstring"):
        tok.apply_chat_template(conversation, tools=[undocumented], chat_template=template)
    with pytest.raises(TypeError, match="tools\\[0\\] is int"):
        tok.apply_chat_template(conversation, tools=[3], chat_template=template)


# -- streaming -----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2", "minilm", "gpt2"])
def test_incremental_decoder_never_splits_a_character(pairs, name, corpus):
    from leanformers.tokenization import IncrementalDecoder

    ours, _ = pairs[name]
    texts = [c for c in corpus[:400] if any(ord(ch) > 0x2000 for ch in c)][:60]
    for skip in (False, True):
        for text in texts:
            ids = ours(text)["input_ids"]
            decoder = IncrementalDecoder(ours, skip_special_tokens=skip)
            pieces = [decoder.push(i) for i in ids]
            pieces.append(decoder.flush())
            assert all("\ufffd" not in p for p in pieces), pieces
            assert "".join(pieces) == ours.decode(ids, skip_special_tokens=skip)


def test_incremental_decoder_flushes_an_incomplete_character(smol):
    from leanformers.tokenization import IncrementalDecoder

    ids = smol.encode("🚀", add_special_tokens=False)
    assert len(ids) > 1
    decoder = IncrementalDecoder(smol)
    assert decoder.push(ids[:1]) == ""  # the rocket's first byte alone is no character yet
    assert decoder.push(ids[1:-1]) == ""
    assert decoder.flush() == smol.decode(ids[:-1]) and "\ufffd" in smol.decode(ids[:-1])
    decoder = IncrementalDecoder(smol)
    assert decoder.push(torch.tensor(ids)) == "🚀" and decoder.flush() == ""


# -- training ------------------------------------------------------------------------------------------------
def training_texts():
    return [" ".join(chunk.split()[:40]) for chunk in corpus_chunks()[:3000:3]]


@pytest.mark.slow
def test_train_bpe_matches_transformers_and_reloads(smol, hf_smol, tmp_path):
    texts = training_texts()
    ours = smol.train_new_from_iterator([texts], vocab_size=400, new_special_tokens=["<|tool|>"],
                                          show_progress=False)
    theirs = hf_smol.train_new_from_iterator([texts], vocab_size=400, new_special_tokens=["<|tool|>"],
                                          show_progress=False)
    assert type(ours.backend_tokenizer.model).__name__ == "BPE"
    assert len(ours) == 400 and ours.get_vocab() == theirs.get_vocab()
    assert ours(texts[:200])["input_ids"] == theirs(texts[:200])["input_ids"]
    assert ours.all_special_tokens == theirs.all_special_tokens and "<|tool|>" in ours.all_special_tokens
    assert ours.eos_token == smol.eos_token and ours.eos_token_id == theirs.eos_token_id
    assert ours.chat_template == smol.chat_template
    ours.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(texts[:200])["input_ids"] == ours(texts[:200])["input_ids"]
    assert again.batch_decode(again(texts[:50])["input_ids"]) == texts[:50]


@pytest.mark.slow
def test_train_wordpiece_keeps_the_pipeline(minilm, hf_minilm, transformers_module, tmp_path):
    texts = training_texts()
    kwargs = dict(vocab_size=500, special_tokens_map={"[SEP]": "[END]"}, show_progress=False)
    ours = minilm.train_new_from_iterator(iter([texts[:500], texts[500:]]), **kwargs)
    theirs = hf_minilm.train_new_from_iterator(iter([texts[:500], texts[500:]]), **kwargs)
    assert type(ours.backend_tokenizer.model).__name__ == "WordPiece"
    assert ours.vocab_size == theirs.vocab_size >= 500  # the trainer keeps every character of the corpus
    # (transformers' BertTokenizer also re-adds the renamed-away "[SEP]" as an extra token; we do not)
    assert ours.sep_token == theirs.sep_token == "[END]"
    for name in ("cls_token_id", "sep_token_id", "pad_token_id", "unk_token_id", "mask_token_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.sep_token == "[END]" and ours.cls_token == "[CLS]"
    ids = ours("hello world")["input_ids"]
    assert ids[0] == ours.cls_token_id and ids[-1] == ours.sep_token_id == ours.convert_tokens_to_ids("[END]")
    assert ours("Hello World")["input_ids"] == ids  # the lower-casing normalizer came along
    # the WordPiece trainer breaks ties in no fixed order, so the vocabulary is checked against its own reload
    ours.save_pretrained(tmp_path)
    for reloaded in (AutoTokenizer.from_pretrained(tmp_path), transformers_module.AutoTokenizer.from_pretrained(str(tmp_path))):
        assert reloaded(texts[:100], texts[100:200])["input_ids"] == ours(texts[:100], texts[100:200])["input_ids"]


# -- formats: SentencePiece GGUF, tokenizer.model, added_tokens.json -----------------------------------------
def sentencepiece_like_vocab():
    """A SentencePiece-style BPE vocabulary: <unk> <s> </s>, 256 byte pieces, then "▁"-spelled pieces whose
    scores fall with their merge rank, as sentencepiece's BPE trainer writes them."""
    from tokenizers import SentencePieceBPETokenizer

    sp = SentencePieceBPETokenizer(add_prefix_space=True)
    sp.train_from_iterator(training_texts()[:600], vocab_size=800, min_frequency=2, show_progress=False,
                           limit_alphabet=300)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    for rank, (token, _) in enumerate(sorted(sp.get_vocab().items(), key=lambda kv: kv[1])):
        if token not in tokens:
            tokens.append(token)
            types.append(1)
            scores.append(-float(rank))
    return tokens, scores, types


@pytest.fixture(scope="module")
def spm_gguf(tmp_path_factory):
    import gguf

    tokens, scores, types = sentencepiece_like_vocab()
    folder = tmp_path_factory.mktemp("spm-gguf")
    writer = gguf.GGUFWriter(str(folder / "spm.gguf"), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return folder / "spm.gguf", (tokens, scores, types)


SPM_TEXTS = ["Hello world", "  leading spaces and  double", "emoji 👍🏽 and ☃ fall back to bytes", "", "\n\tx",
             "naïve café 12345", "<s> is text here"]


@pytest.mark.slow
def test_sentencepiece_gguf_matches_transformers(spm_gguf, transformers_module, corpus):
    path, _ = spm_gguf
    ours = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    theirs = transformers_module.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    texts = SPM_TEXTS + corpus[:1500:5]
    ids = ours(texts)["input_ids"]
    assert ids == theirs(texts)["input_ids"]
    assert ids[0][0] == ours.bos_token_id == 1  # llama.cpp adds BOS to SentencePiece vocabularies
    assert ours.batch_decode(ids) == theirs.batch_decode(ids)
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)
    for attr in ("bos_token", "eos_token", "unk_token", "all_special_tokens", "add_bos_token", "padding_side"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.tokenize("emoji 👍🏽") == theirs.tokenize("emoji 👍🏽")
    kwargs = dict(return_offsets_mapping=True, truncation=True, max_length=6)
    assert_same_encoding(ours(SPM_TEXTS, **kwargs), theirs(SPM_TEXTS, **kwargs), "spm")


def protobuf_field(number: int, value) -> bytes:
    """One protobuf field: bytes/str length-delimited, float fixed32, int varint."""
    import struct

    def varint(n):
        out = b""
        while True:
            out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
            n >>= 7
            if not n:
                return out

    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    if isinstance(value, float):
        return varint(number << 3 | 5) + struct.pack("<f", value)
    return varint(number << 3) + varint(value)


def write_sentencepiece_model(path, tokens, scores, types, model_type=2, byte_fallback=True, collapse_spaces=False):
    pieces = b"".join(protobuf_field(1, protobuf_field(1, t) + protobuf_field(2, s) + protobuf_field(3, k))
                      for t, s, k in zip(tokens, scores, types))
    trainer = protobuf_field(3, model_type) + protobuf_field(35, int(byte_fallback)) + protobuf_field(40, 0) + \
        protobuf_field(41, 1) + protobuf_field(42, 2) + protobuf_field(43, (1 << 64) - 1)  # pad_id = -1
    normalizer = protobuf_field(1, "identity") + protobuf_field(3, 1) + protobuf_field(4, int(collapse_spaces))
    path.write_bytes(pieces + protobuf_field(2, trainer) + protobuf_field(3, normalizer))


@pytest.mark.slow
def test_tokenizer_model_file_matches_the_same_vocabulary_in_gguf(spm_gguf, transformers_module, corpus, tmp_path):
    path, (tokens, scores, types) = spm_gguf
    write_sentencepiece_model(tmp_path / "tokenizer.model", tokens, scores, types)
    ours = AutoTokenizer.from_pretrained(tmp_path)
    theirs = transformers_module.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    texts = SPM_TEXTS + corpus[:1500:5]
    assert ours(texts)["input_ids"] == theirs(texts)["input_ids"]
    assert (ours.bos_token, ours.eos_token, ours.unk_token, ours.pad_token) == ("<s>", "</s>", "<unk>", None)
    ours.save_pretrained(tmp_path / "saved")  # and it converts to a tokenizer.json transformers loads
    reloaded = transformers_module.AutoTokenizer.from_pretrained(str(tmp_path / "saved"))
    assert reloaded(texts)["input_ids"] == theirs(texts)["input_ids"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "tokenizer.model").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    with pytest.raises(ValueError, match="not a SentencePiece model file"):
        AutoTokenizer.from_pretrained(tmp_path / "bad")


def test_unigram_tokenizer_model_matches_tokenizers_sentencepiece(tmp_path):
    import struct

    from tokenizers import SentencePieceUnigramTokenizer

    ascii_texts = [t for t in training_texts() if t.isascii()]
    reference = SentencePieceUnigramTokenizer()
    reference.train_from_iterator(ascii_texts[:400], vocab_size=600, show_progress=False,
                                  special_tokens=["<unk>", "<s>", "</s>"], unk_token="<unk>")
    pieces = reference.get_vocab()
    model = json.loads(reference.to_str())["model"]
    tokens = [piece for piece, _ in model["vocab"]]
    # a .model file stores float32 scores; the reference gets the same, so near-ties break alike
    scores = [struct.unpack("<f", struct.pack("<f", score))[0] for _, score in model["vocab"]]
    reference._tokenizer.model = models.Unigram(list(zip(tokens, scores)), unk_id=model["unk_id"],
                                                byte_fallback=False)
    types = [2 if t == "<unk>" else 3 if t in ("<s>", "</s>") else 1 for t in tokens]
    assert len(tokens) == len(pieces)
    write_sentencepiece_model(tmp_path / "tokenizer.model", tokens, scores, types, model_type=1, byte_fallback=False,
                              collapse_spaces=True)
    ours = AutoTokenizer.from_pretrained(tmp_path, add_bos_token=False)
    texts = ascii_texts[400:700] + ["  double  spaces", "unseen ☃ glyph"]
    assert [ours.encode(t) for t in texts] == [reference.encode(t).ids for t in texts]
    assert ours.decode(ours.encode("Hello there world")) == reference.decode(reference.encode("Hello there world").ids)


@pytest.mark.slow
def test_added_tokens_json_and_special_tokens_map_load_like_transformers(minilm, transformers_module, tmp_path):
    import copy

    tok = copy.deepcopy(minilm)
    tok.add_tokens(["newtoken", "<tool>"])
    tok.add_special_tokens({"additional_special_tokens": ["<extra>"]})
    tok.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "added_tokens.json").read_text()) == {"newtoken": 30522, "<tool>": 30523,
                                                                         "<extra>": 30524}
    assert json.loads((tmp_path / "special_tokens_map.json").read_text())["additional_special_tokens"] == ["<extra>"]
    text = "a newtoken and <tool> with <extra> tokens"
    theirs = transformers_module.AutoTokenizer.from_pretrained(str(tmp_path))
    assert AutoTokenizer.from_pretrained(tmp_path)(text)["input_ids"] == theirs(text)["input_ids"] == tok(text)["input_ids"]
    # an older layout: tokenizer.json without the added tokens, which added_tokens.json lists
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < 30522]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {k: v for k, v in config["added_tokens_decoder"].items() if int(k) < 30522}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    legacy = AutoTokenizer.from_pretrained(tmp_path)
    assert legacy(text)["input_ids"] == tok(text)["input_ids"]
    assert legacy.convert_ids_to_tokens([30522, 30523, 30524]) == ["newtoken", "<tool>", "<extra>"]
    (tmp_path / "added_tokens.json").write_text('{"newtoken": 40000}')
    with pytest.raises(ValueError, match="'newtoken' is listed with id 40000"):
        AutoTokenizer.from_pretrained(tmp_path)


# -- the model side: resize_token_embeddings -----------------------------------------------------------------
@pytest.mark.parametrize("variant", ["untied", "tied"])
def test_resize_token_embeddings_after_adding_tokens(llama_checkpoint, variant):
    from leanformers import AutoModelForCausalLM

    _, folder = llama_checkpoint(variant)
    model = AutoModelForCausalLM.from_pretrained(folder)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    tok = tiny_tokenizer()
    tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<a>", "<b>"]})
    torch.manual_seed(0)
    embedding = model.resize_token_embeddings(128 + len(tok) - 5, pad_to_multiple_of=16)
    assert embedding is model.get_input_embeddings() and embedding.weight.shape == (144, 64)
    assert model.config.vocab_size == 144 and model.get_output_embeddings().weight.shape == (144, 64)
    assert torch.equal(embedding.weight[:128], old_in)
    assert torch.equal(model.get_output_embeddings().weight[:128], old_out)
    new = embedding.weight[128:].detach()
    assert torch.allclose(new.mean(0), old_in.mean(0), atol=1e-3)
    assert new.std(0).max() < 1e-3  # drawn close around the mean, as transformers' mean_resizing does
    assert (model.get_output_embeddings().weight is embedding.weight) == (variant == "tied")
    if variant == "untied":
        assert torch.allclose(model.get_output_embeddings().weight[128:].mean(0), old_out.mean(0), atol=1e-3)
    logits = model(torch.tensor([[1, 130, 143]])).logits
    assert logits.shape == (1, 3, 144) and torch.isfinite(logits).all()
    model.resize_token_embeddings(100)
    assert model.get_input_embeddings().weight.shape == (100, 64) and model.config.vocab_size == 100
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == (variant == "tied")
    plain = model.resize_token_embeddings(120, mean_resizing=False).weight[100:]
    assert 0.005 < plain.std().item() < 0.05  # the usual random init (initializer_range 0.02)
