"""Parsers against files, the task table, submission formats, the tokenisation cache and the data order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import needs_shared
from fine_tune import batching
from fine_tune.batching import MicroBatchStream, cached_features
from fine_tune.errors import UserError
from fine_tune.tasks import Example, get_task
from fine_tune.tasks.boolq import parse_boolq
from fine_tune.tasks.qqp import parse_qqp

QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_boolq_both_label_encodings(tmp_path):
    rows = [{"question": "q1", "passage": "p1", "idx": 0, "label": True},
            {"question": "q2", "passage": "p2", "idx": 1, "label": False}]
    official = write(tmp_path / "a.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    strings = write(tmp_path / "b.jsonl", "".join(json.dumps(dict(r, label=str(r["label"]).lower())) + "\n" for r in rows))
    expected = [Example(0, "p1", "q1", 1), Example(1, "p2", "q2", 0)]
    assert parse_boolq(official, True) == expected
    assert parse_boolq(strings, True) == expected


def test_boolq_test_split_has_no_label(tmp_path):
    f = write(tmp_path / "t.jsonl", json.dumps({"question": "q", "passage": "p", "idx": 7}) + "\n\n")
    assert parse_boolq(f, False) == [Example(7, "p", "q", None)]


@pytest.mark.parametrize("line, fragment", [
    ('{"question": "q", "passage": ', "not valid JSON"),
    ('{"question": "q", "idx": 0, "label": true}', "'passage'"),
    ('{"question": "q", "passage": "p", "idx": 0, "label": "maybe"}', "unknown label"),
    ('{"question": "q", "passage": "p", "idx": 0}', "missing 'label'"),
])
def test_boolq_malformed_lines_name_file_and_line(tmp_path, line, fragment):
    good = json.dumps({"question": "q", "passage": "p", "idx": 0, "label": True})
    f = write(tmp_path / "bad.jsonl", good + "\n" + line + "\n")
    with pytest.raises(UserError) as e:
        parse_boolq(f, True)
    assert str(f) in str(e.value) and "line 2" in str(e.value) and fragment in str(e.value)


def test_qqp_train_and_test(tmp_path):
    train = write(tmp_path / "train.tsv", f"{QQP_HEADER}\n5\t1\t2\thow?\twhy?\t1\n6\t3\t4\ta b\tc d\t0\n")
    test = write(tmp_path / "test.tsv", "id\tquestion1\tquestion2\n0\tx?\ty?\n1\tz\tw\n")
    assert parse_qqp(train, True) == [Example(5, "how?", "why?", 1), Example(6, "a b", "c d", 0)]
    assert parse_qqp(test, False) == [Example(0, "x?", "y?", None), Example(1, "z", "w", None)]


@pytest.mark.parametrize("body, fragment, line", [
    (f"{QQP_HEADER}\n1\t1\t2\tq\tq2\n", "5 tab-separated columns, expected 6", 2),
    (f"{QQP_HEADER}\n1\t1\t2\tq\tq2\t0\n2\t1\t2\tq\tq2\t2\n", "unknown label '2'", 3),
    ("id\tquestion1\tquestion2\tis_duplicate\n", "header", 1),
])
def test_qqp_malformed(tmp_path, body, fragment, line):
    f = write(tmp_path / "dev.tsv", body)
    with pytest.raises(UserError) as e:
        parse_qqp(f, True)
    assert str(f) in str(e.value) and f"line {line}" in str(e.value) and fragment in str(e.value)


def test_unknown_split_and_task(tmp_path):
    with pytest.raises(UserError, match="valid splits: train, val, test"):
        get_task("boolq").path(tmp_path, "dev_mismatched")
    with pytest.raises(UserError, match="valid splits: train, dev, test"):
        get_task("qqp").check_split("val")
    with pytest.raises(UserError, match="--task 'mnli' is unknown"):
        get_task("mnli")


def test_load_max_examples_and_missing_file(data_root, tmp_path):
    task = get_task("qqp")
    full = task.load(data_root, "train")
    assert task.load(data_root, "train", max_examples=5) == full[:5]
    with pytest.raises(UserError, match="not found") as e:
        task.load(tmp_path / "nowhere", "dev")
    assert "QQP/dev.tsv" in str(e.value)


def test_submission_formats(tmp_path):
    examples = [Example(0, "a", "b", None), Example(1, "c", "d", None), Example(2, "e", "f", None)]
    get_task("qqp").write_submission(tmp_path / "QQP.tsv", examples, [1, 0, 1])
    assert (tmp_path / "QQP.tsv").read_text() == "index\tprediction\n0\t1\n1\t0\n2\t1\n"
    get_task("boolq").write_submission(tmp_path / "BoolQ.jsonl", examples, np.array([1, 0, 0]))
    assert (tmp_path / "BoolQ.jsonl").read_text().splitlines() == [
        '{"idx": 0, "label": "true"}', '{"idx": 1, "label": "false"}', '{"idx": 2, "label": "false"}']


def test_real_boolq_files():
    root = needs_shared("data", "boolq")
    val = parse_boolq(root / "val.jsonl", True)
    test = parse_boolq(root / "test.jsonl", False)
    assert len(val) == 3270 and {e.label for e in val} == {0, 1}
    assert len(test) == 3245 and all(e.label is None for e in test)
    assert all(e.text and e.text_pair for e in val)


def test_real_qp_pairs_files():
    root = needs_shared("data", "qp_pairs", "QQP")
    sizes = {split: len(parse_qqp(root / f"{split}.tsv", split != "test")) for split in ("train", "dev", "test")}
    assert sizes == {"train": 4540, "dev": 1000, "test": 1000}


def test_tokenisation_cache(tiny_bert, data_root, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    examples = get_task("boolq").load(data_root, "train")
    cache = tmp_path / "cache"
    first = cached_features(cache, tok, examples, 32, "hash-a")
    files = list(cache.glob("features-*.pt"))
    assert len(files) == 1
    assert first.lengths().max() <= 32 and len(first) == len(examples)
    enc = tok(examples[3].text, examples[3].text_pair, truncation=True, max_length=32)
    s, e = first.offsets[3], first.offsets[4]
    assert first.input_ids[s:e].tolist() == enc["input_ids"]

    def boom(*a, **k):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(batching, "tokenize", boom)
    again = cached_features(cache, tok, examples, 32, "hash-a")
    assert np.array_equal(again.input_ids, first.input_ids) and np.array_equal(again.labels, first.labels)
    monkeypatch.undo()
    cached_features(cache, tok, examples, 16, "hash-a")  # another max_seq_len: another entry
    assert len(list(cache.glob("features-*.pt"))) == 2
    files[0].write_bytes(b"truncated")  # a corrupt cache file is rebuilt, not trusted
    rebuilt = cached_features(cache, tok, examples, 32, "hash-a")
    assert np.array_equal(rebuilt.input_ids, first.input_ids)
    torch.load(files[0], weights_only=True)


def test_micro_batch_stream_order():
    n, mb = 10, 4
    s = MicroBatchStream(n, mb, seed=3)
    batches = [s.next() for _ in range(6)]  # two epochs: 4, 4, 2 rows each
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    e0, e1 = np.concatenate(batches[:3]), np.concatenate(batches[3:])
    assert sorted(e0) == list(range(n)) and sorted(e1) == list(range(n))
    assert not np.array_equal(e0, e1)
    resumed = MicroBatchStream(n, mb, seed=3, position=4)
    assert all(np.array_equal(resumed.next(), b) for b in batches[4:])
    assert not np.array_equal(np.concatenate([MicroBatchStream(n, mb, seed=4).next() for _ in range(3)]), e0)
