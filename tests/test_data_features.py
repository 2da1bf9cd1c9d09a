"""Features (Value, ClassLabel, List, Sequence), cast/cast_column, class_encode_column and
interleave_datasets against `datasets` on the same rows: same printed features, same values, or the
same kind of error."""

import pytest

import datasets
import leanformers
from leanformers import ClassLabel, Dataset, Features, List, Sequence, Value, interleave_datasets, load_from_disk

ROWS = {"text": ["good film", "bad plot", "fine", "awful", "great"], "label": ["pos", "neg", "pos", "neg", "pos"],
        "stars": [5, 1, 3, 1, 4], "score": [0.9, 0.1, 0.5, None, 0.8], "tokens": [[1, 2], [3], [], [4, 5, 6], [7]],
        "meta": [{"lang": "en"}] * 5}


def pair():
    return Dataset.from_dict(ROWS), datasets.Dataset.from_dict(ROWS)


def same(ours, theirs):
    assert repr(ours.features) == repr(theirs.features)
    for a, b in zip(ours.to_list(), theirs.to_list(), strict=True):
        assert a == b


def test_features_print_as_datasets():
    ours, theirs = pair()
    assert isinstance(ours.features, Features)
    assert repr(ours.features) == repr(theirs.features)
    assert str(ours.features) == str(theirs.features)


@pytest.mark.parametrize("build", [
    lambda m: m.Value("float"), lambda m: m.Value("double"), lambda m: m.ClassLabel(num_classes=3),
    lambda m: m.ClassLabel(names=["a", "b"]), lambda m: m.List(m.Value("int32")),
    lambda m: m.List(m.Value("int8"), length=2), lambda m: m.Sequence(m.Value("string")),
    lambda m: m.Sequence({"a": m.Value("int64")}), lambda m: m.LargeList(m.Value("int64")),
    lambda m: m.Features({"x": m.Value("string"), "y": {"z": m.ClassLabel(names=["n"])}})])
def test_feature_reprs_and_dicts_match_datasets(build):
    ours, theirs = build(leanformers.data), build(datasets)
    assert repr(ours) == repr(theirs)
    if isinstance(theirs, datasets.Features):
        assert ours.to_dict() == theirs.to_dict()
        assert ours.arrow_schema == theirs.arrow_schema


def test_class_label_int2str_str2int_as_datasets():
    ours, theirs = ClassLabel(names=["neg", "pos"]), datasets.ClassLabel(names=["neg", "pos"])
    assert ours.int2str(1) == theirs.int2str(1)
    assert ours.int2str([1, 0]) == theirs.int2str([1, 0])
    assert ours.str2int(["pos", "neg", " pos", "1"]) == theirs.str2int(["pos", "neg", " pos", "1"])
    assert ours.num_classes == theirs.num_classes
    for bad in (lambda c: c.int2str(2), lambda c: c.int2str(-1), lambda c: c.str2int("maybe")):
        with pytest.raises(ValueError):
            bad(theirs)
        with pytest.raises(ValueError, match=r"class label .*(\['neg', 'pos'\]|0 to 1)"):
            bad(ours)
    with pytest.raises(ValueError, match="unique"):
        ClassLabel(names=["a", "a"])


def test_class_encode_column_as_datasets():
    ours, theirs = pair()
    for column in ("label", "stars", "score"):
        same(ours.class_encode_column(column), theirs.class_encode_column(column))
    same(ours.class_encode_column("score", include_nulls=True), theirs.class_encode_column("score", include_nulls=True))
    encoded = ours.class_encode_column("label")
    assert encoded.features["label"].int2str(encoded["label"]) == ROWS["label"]
    with pytest.raises(ValueError, match="Value column"):
        encoded.class_encode_column("label")


def test_cast_column_and_cast_as_datasets():
    ours, theirs = pair()
    for column, build in [("label", lambda m: m.ClassLabel(names=["neg", "pos"])), ("stars", lambda m: m.Value("float32")),
                          ("stars", lambda m: m.Value("string")), ("tokens", lambda m: m.List(m.Value("int32"))),
                          ("score", lambda m: m.Value("float16"))]:
        same(ours.cast_column(column, build(leanformers.data)), theirs.cast_column(column, build(datasets)))
    features = lambda m: m.Features({"meta": {"lang": m.Value("large_string")}, "stars": m.Value("int8"),  # noqa: E731
                                     "text": m.Value("string"), "label": m.Value("string"),
                                     "score": m.Value("float64"), "tokens": m.List(m.Value("int16"))})
    same(ours.cast(features(leanformers.data)), theirs.cast(features(datasets)))
    built = Dataset.from_dict({"label": ["pos", "neg"]}, features=Features({"label": ClassLabel(names=["neg", "pos"])}))
    assert built["label"] == [1, 0]


def test_bad_casts_are_clear_errors_and_leave_the_dataset(tmp_path):
    ours, theirs = pair()
    ours.save_to_disk(tmp_path / "saved")
    before = sorted(p.name for p in (tmp_path / "saved").iterdir())
    cases = [("text", lambda m: m.Value("int64"), r"cannot cast column 'text'.*Failed to parse string"),
             ("label", lambda m: m.ClassLabel(names=["neg"]), r"column 'label'.*'pos'.*\['neg'\]"),
             ("tokens", lambda m: m.Value("int64"), r"cannot cast column 'tokens'")]
    for column, build, message in cases:
        with pytest.raises((ValueError, TypeError)):
            theirs.cast_column(column, build(datasets))
        with pytest.raises(ValueError, match=message):
            ours.cast_column(column, build(leanformers.data))
    with pytest.raises(ValueError, match="out of range"):  # datasets checks this when building rows
        Dataset.from_dict({"l": [0, 5]}, features=Features({"l": ClassLabel(names=["a", "b"])}))
    with pytest.raises(ValueError, match="greater than configured num_classes"):
        datasets.Dataset.from_dict({"l": [0, 5]}, features=datasets.Features({"l": datasets.ClassLabel(names=["a", "b"])}))
    with pytest.raises(ValueError, match="must be the dataset's columns"):
        ours.cast(Features({"text": Value("string")}))
    with pytest.raises(ValueError, match="unknown Value dtype 'strin'"):
        Value("strin")
    same(ours, theirs)
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == before
    same(load_from_disk(tmp_path / "saved"), theirs)


def test_features_kept_through_transforms_as_datasets():
    ours, theirs = (d.class_encode_column("label") for d in pair())
    steps = [lambda d: d.map(lambda x: {"n": len(x["text"])}), lambda d: d.map(lambda x: {"label": 1 - x["label"]}),
             lambda d: d.filter(lambda x: x["stars"] > 1), lambda d: d.select([4, 0]), lambda d: d.shuffle(seed=1),
             lambda d: d.rename_column("label", "labels"), lambda d: d.remove_columns("text"),
             lambda d: d.select_columns(["label", "stars"]), lambda d: d.sort("stars"), lambda d: d.flatten_indices()]
    for step in steps:
        same(step(ours), step(theirs))


def test_features_survive_save_and_load_both_ways(tmp_path):
    ours, theirs = (d.class_encode_column("label") for d in pair())
    ours.save_to_disk(tmp_path / "ours")
    theirs.save_to_disk(tmp_path / "theirs")
    same(datasets.load_from_disk(str(tmp_path / "ours")), theirs)
    same(load_from_disk(tmp_path / "theirs"), theirs)
    same(load_from_disk(tmp_path / "ours"), theirs)


def test_parquet_features_from_datasets_are_read(tmp_path):
    _, theirs = pair()
    theirs.class_encode_column("label").to_parquet(str(tmp_path / "train.parquet"))
    ours = leanformers.load_dataset("parquet", data_files=str(tmp_path / "train.parquet"))["train"]
    same(ours, datasets.load_dataset("parquet", data_files=str(tmp_path / "train.parquet"),
                                     cache_dir=str(tmp_path / "hf"))["train"])
    assert ours.features["label"] == ClassLabel(names=["neg", "pos"])


def test_sequence_is_a_list():
    assert Sequence(Value("int64")) == List(Value("int64"))
    assert isinstance(List(Value("int64")), Sequence)
    assert Sequence({"a": Value("int64")}) == {"a": List(Value("int64"))}


def interleave_pair(sizes):
    make = lambda cls: [cls.from_dict({"x": [f"{i}-{k}" for k in range(n)]}) for i, n in enumerate(sizes)]  # noqa: E731
    return make(Dataset), make(datasets.Dataset)


@pytest.mark.parametrize("strategy", ["first_exhausted", "all_exhausted", "all_exhausted_without_replacement"])
@pytest.mark.parametrize("probabilities", [None, [0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])
def test_interleave_datasets_as_datasets(strategy, probabilities):
    ours, theirs = interleave_pair([3, 7, 5])
    a = interleave_datasets(ours, probabilities=probabilities, seed=7, stopping_strategy=strategy)
    b = datasets.interleave_datasets(theirs, probabilities=probabilities, seed=7, stopping_strategy=strategy)
    for x, y in zip(a["x"], b["x"], strict=True):
        assert x == y


def test_interleave_datasets_bad_input():
    ours, theirs = interleave_pair([3, 4])
    a = interleave_datasets(ours, probabilities=[1.0, 0.0], seed=1)
    b = datasets.interleave_datasets(theirs, probabilities=[1.0, 0.0], seed=1)
    assert a["x"] == list(b["x"])
    for kwargs in ({"stopping_strategy": "sometimes"}, {"probabilities": [1.0, 0.0], "stopping_strategy": "all_exhausted"}):
        with pytest.raises(ValueError):
            datasets.interleave_datasets(theirs, **kwargs)
        with pytest.raises(ValueError, match="stopping_strategy"):
            interleave_datasets(ours, **kwargs)
    with pytest.raises(ValueError, match="pick a split"):
        interleave_datasets([leanformers.DatasetDict({"train": ours[0]})])


def test_cast_takes_features_not_names():
    ours, theirs = pair()
    with pytest.raises(TypeError, match="not a feature; use Value"):
        ours.cast_column("stars", "float32")
    with pytest.raises((TypeError, ValueError, AttributeError)):
        theirs.cast_column("stars", "float32")


def test_dataset_dict_class_encode_column_as_datasets():
    ours = leanformers.DatasetDict({"train": Dataset.from_dict(ROWS)})
    theirs = datasets.DatasetDict({"train": datasets.Dataset.from_dict(ROWS)})
    same(ours.class_encode_column("label")["train"], theirs.class_encode_column("label")["train"])
