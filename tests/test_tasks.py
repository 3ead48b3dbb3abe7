"""Parsers against files, the task table, submission formats, the tokenisation cache and the data order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import needs_shared

from fine_tune import batching
from fine_tune.batching import Features, MicroBatchStream, cached_features, tokenize
from fine_tune.errors import UserError
from fine_tune.tasks import Example, get_task
from fine_tune.tasks.boolq import parse_boolq
from fine_tune.tasks.qqp import parse_qqp

QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
QQP_TEST_HEADER = "id\tquestion1\tquestion2"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


# ------------------------------------------------------------------------------------------------ BoolQ


def test_boolq_boolean_and_string_labels_give_the_same_examples(tmp_path):
    rows = [
        {"question": "q one", "passage": "p one", "idx": 10, "label": True},
        {"question": "q two", "passage": "p two", "idx": 42, "label": False},
        {"question": "q three", "passage": "p three", "idx": 7, "label": True},
    ]
    official = write(tmp_path / "official.jsonl", jsonl(rows))
    strings = write(tmp_path / "strings.jsonl", jsonl(dict(r, label="true" if r["label"] else "false") for r in rows))
    # text = passage, text_pair = question, True -> 1, idx kept as written (not the row position)
    expected = [Example(10, "p one", "q one", 1), Example(42, "p two", "q two", 0), Example(7, "p three", "q three", 1)]
    assert parse_boolq(official, True) == expected
    assert parse_boolq(strings, True) == expected
    capitalised = write(tmp_path / "capitalised.jsonl", jsonl(dict(r, label=str(r["label"])) for r in rows))
    assert parse_boolq(capitalised, True) == expected  # "True" / "False", as some copies write them


def test_boolq_test_split_without_label(tmp_path):
    f = write(
        tmp_path / "test.jsonl",
        jsonl([{"question": "q", "passage": "p", "idx": 7}, {"question": "r", "passage": "s", "idx": 3}]) + "\n",
    )
    assert parse_boolq(f, False) == [Example(7, "p", "q", None), Example(3, "s", "r", None)]


@pytest.mark.parametrize(
    "line, fragment",
    [
        ('{"question": "q", "passage": ', "not valid JSON"),
        ('{"question": "q", "idx": 1, "label": true}', "'passage'"),
        ('{"question": "q", "passage": "p", "idx": 1, "label": "maybe"}', "'maybe'"),
        ('{"question": "q", "passage": "p", "idx": 1}', "missing 'label'"),
    ],
    ids=["bad-json", "no-passage", "label-maybe", "no-label"],
)
def test_boolq_malformed_line_names_file_and_line(tmp_path, line, fragment):
    good = json.dumps({"question": "q", "passage": "p", "idx": 0, "label": True})
    f = write(tmp_path / "BoolQ" / "val.jsonl", good + "\n" + line + "\n" + good + "\n")
    with pytest.raises(UserError) as e:
        parse_boolq(f, True)
    message = str(e.value)
    assert str(f) in message and "line 2" in message and fragment in message
    assert "\n" not in message


# -------------------------------------------------------------------------------------------------- QQP


@pytest.mark.parametrize("split", ["train", "dev"])
def test_qqp_labelled_splits(tmp_path, split):
    write(
        tmp_path / "QQP" / f"{split}.tsv",
        f"{QQP_HEADER}\n5\t11\t12\thow are you?\twhy?\t1\n6\t13\t14\ta b\tc d\t0\n9\t15\t16\tx\ty\t1\n",
    )
    assert get_task("qqp").load(tmp_path, split) == [
        Example(5, "how are you?", "why?", 1),
        Example(6, "a b", "c d", 0),
        Example(9, "x", "y", 1),
    ]


def test_qqp_test_split(tmp_path):
    write(tmp_path / "QQP" / "test.tsv", f"{QQP_TEST_HEADER}\n12\tx?\ty?\n3\tz\tw\r\n\n")
    assert get_task("qqp").load(tmp_path, "test") == [Example(12, "x?", "y?", None), Example(3, "z", "w", None)]


@pytest.mark.parametrize(
    "name, split, file, read_ids",
    [
        ("qqp", "test", "QQP/test.tsv", lambda text: [int(x.split("\t")[0]) for x in text.splitlines()[1:]]),
        ("boolq", "test", "BoolQ/test.jsonl", lambda text: [json.loads(x)["idx"] for x in text.splitlines()]),
    ],
    ids=["qqp", "boolq"],
)
def test_synthetic_test_ids_reach_the_submission_file(tmp_path, name, split, file, read_ids):
    """The synthetic test splits' ids are not row numbers (nor sorted): parsing keeps them and the submission file
    names each row by the file's id, in the file's order."""
    from fine_tune import synthetic

    synthetic.write_boolq(tmp_path, n_train=4, n_val=4, n_test=6)
    synthetic.write_qqp(tmp_path, n_train=4, n_dev=4, n_test=6)
    ids = read_ids((tmp_path / file).read_text(encoding="utf-8"))
    assert len(set(ids)) == 6 and ids != list(range(6)) and ids != sorted(ids)
    task = get_task(name)
    examples = task.load(tmp_path, split)
    assert [e.idx for e in examples] == ids and all(e.label is None for e in examples)
    out = tmp_path / task.submission_name(split)
    task.write_submission(out, examples, [1, 0, 0, 1, 1, 0])
    assert read_ids(out.read_text()) == ids  # QQP.tsv: a header line, then index<TAB>prediction
    # the labelled splits are numbered as the official files are
    labelled = "dev" if name == "qqp" else "val"
    assert [e.idx for e in task.load(tmp_path, labelled)] == list(range(4))


@pytest.mark.parametrize(
    "body, fragment, line",
    [
        (f"{QQP_HEADER}\n1\t1\t2\tq\tq2\t1\n2\t1\t2\tq\tq2\n", "5 tab-separated columns, expected 6", 3),
        (f"{QQP_HEADER}\n1\t1\t2\tq\tq2\t0\n2\t1\t2\tq\tq2\t2\n", "'2'", 3),
        ("id\tquestion1\tquestion2\tis_duplicate\n1\tq\tq2\t0\n", "header", 1),
    ],
    ids=["columns", "label-2", "header"],
)
def test_qqp_malformed_names_file_and_line(tmp_path, body, fragment, line):
    f = write(tmp_path / "QQP" / "dev.tsv", body)
    with pytest.raises(UserError) as e:
        parse_qqp(f, True)
    message = str(e.value)
    assert str(f) in message and f"line {line}" in message and fragment in message


def test_qqp_test_split_with_six_columns_is_refused(tmp_path):
    f = write(tmp_path / "test.tsv", f"{QQP_TEST_HEADER}\n0\t1\t2\ta\tb\t1\n")
    with pytest.raises(UserError, match="line 2: 6 tab-separated columns, expected 3"):
        parse_qqp(f, False)


# ------------------------------------------------------------------------------------- the task table


def test_unknown_split_and_task(tmp_path):
    with pytest.raises(UserError) as e:
        get_task("boolq").path(tmp_path, "dev_mismatched")
    assert "'dev_mismatched'" in str(e.value) and "train, val, test" in str(e.value)
    with pytest.raises(UserError, match="train, dev, test"):
        get_task("qqp").path(tmp_path, "val")
    with pytest.raises(UserError, match="'squad'") as e:
        get_task("squad")
    assert "boolq" in str(e.value) and "mnli" in str(e.value)
    # dev_mismatched is an MNLI split, and stays a clear error for BoolQ (above)
    assert get_task("mnli").path(tmp_path, "dev_mismatched") == tmp_path / "MNLI" / "dev_mismatched.tsv"


def test_load_max_examples_and_missing_file(data_root, tmp_path):
    for name, split in (("qqp", "train"), ("boolq", "val")):
        task = get_task(name)
        full = task.load(data_root, split)
        assert len(full) > 5
        assert task.load(data_root, split, max_examples=5) == full[:5]
    missing = tmp_path / "nowhere" / "QQP" / "dev.tsv"
    with pytest.raises(UserError, match="not found") as e:
        get_task("qqp").load(tmp_path / "nowhere", "dev")
    assert str(missing) in str(e.value)


def test_submission_writers(tmp_path):
    examples = [
        Example(40, "a", "b", None),
        Example(1, "c", "d", None),
        Example(7, "e", "f", None),
        Example(5, "g", "h", None),
    ]  # ids neither row numbers nor sorted
    get_task("qqp").write_submission(tmp_path / "QQP.tsv", examples, [1, 0, 1, 1])
    assert (tmp_path / "QQP.tsv").read_text() == "index\tprediction\n40\t1\n1\t0\n7\t1\n5\t1\n"
    get_task("boolq").write_submission(tmp_path / "BoolQ.jsonl", examples, np.array([1, 0, 0, 1]))
    assert (tmp_path / "BoolQ.jsonl").read_text().splitlines() == [
        '{"idx": 40, "label": "true"}',
        '{"idx": 1, "label": "false"}',
        '{"idx": 7, "label": "false"}',
        '{"idx": 5, "label": "true"}',
    ]


# ---------------------------------------------------------------------------------------- real files


def test_real_boolq_files():
    root = needs_shared("data", "boolq")
    val = parse_boolq(root / "val.jsonl", True)
    test = parse_boolq(root / "test.jsonl", False)
    assert len(val) == 3270 and {e.label for e in val} == {0, 1}
    assert len(test) == 3245 and all(e.label is None for e in test)
    assert all(e.text and e.text_pair for e in val + test)
    assert [e.idx for e in val] == list(range(3270)) and [e.idx for e in test] == list(range(3245))
    first = json.loads((root / "val.jsonl").open(encoding="utf-8").readline())
    assert (val[0].text, val[0].text_pair, val[0].label) == (
        first["passage"],
        first["question"],
        1 if first["label"] == "true" else 0,
    )


def test_real_qp_pairs_files():
    root = needs_shared("data", "qp_pairs", "QQP")
    parsed = {split: parse_qqp(root / f"{split}.tsv", split != "test") for split in ("train", "dev", "test")}
    assert {k: len(v) for k, v in parsed.items()} == {"train": 4540, "dev": 1000, "test": 1000}
    for split in ("train", "dev"):
        assert {e.label for e in parsed[split]} == {0, 1}, split
    assert all(e.label is None for e in parsed["test"])
    assert all(e.text and e.text_pair for v in parsed.values() for e in v)
    assert [e.idx for e in parsed["dev"]] == list(range(1000))


# ----------------------------------------------------------------------------------- tokenisation cache


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


def test_tokenize_matches_the_tokenizer(tokenizer, data_root):
    examples = get_task("boolq").load(data_root, "train", 12)
    f = tokenize(tokenizer, examples, 24)
    assert len(f) == 12 and f.lengths().max() <= 24
    assert f.labels.tolist() == [e.label for e in examples]
    for i, ex in enumerate(examples):
        enc = tokenizer(ex.text, ex.text_pair, truncation=True, max_length=24)
        s, e = f.offsets[i], f.offsets[i + 1]
        assert f.input_ids[s:e].tolist() == enc["input_ids"]
        assert f.token_type_ids[s:e].tolist() == enc["token_type_ids"]
    unlabelled = tokenize(tokenizer, get_task("boolq").load(data_root, "test", 4), 24)
    assert unlabelled.labels is None and len(unlabelled) == 4


def _same(a: Features, b: Features) -> bool:
    same_labels = (a.labels is None and b.labels is None) or (
        a.labels is not None and b.labels is not None and np.array_equal(a.labels, b.labels)
    )
    return (
        np.array_equal(a.input_ids, b.input_ids)
        and np.array_equal(a.token_type_ids, b.token_type_ids)
        and np.array_equal(a.offsets, b.offsets)
        and same_labels
    )


def test_cached_features_round_trip(tokenizer, data_root, tmp_path, monkeypatch):
    examples = get_task("boolq").load(data_root, "train")
    cache = tmp_path / "cache"
    first = cached_features(cache, tokenizer, examples, 32, regression=False)
    files = list(cache.glob("features-*.pt"))
    assert len(files) == 1 and files[0].is_file()
    assert _same(first, tokenize(tokenizer, examples, 32))

    def boom(*a, **k):
        raise AssertionError("tokenised again instead of loading the cache")

    monkeypatch.setattr(batching, "tokenize", boom)
    again = cached_features(cache, tokenizer, examples, 32, regression=False)
    assert _same(again, first)
    with pytest.raises(AssertionError, match="tokenised again"):  # another max_seq_len is another entry
        cached_features(cache, tokenizer, examples, 16, regression=False)
    with pytest.raises(AssertionError, match="tokenised again"):  # other rows too (tests/test_identity.py: each input)
        cached_features(cache, tokenizer, examples[:-1], 32, regression=False)
    monkeypatch.undo()

    short = cached_features(cache, tokenizer, examples, 16, regression=False)
    assert len(list(cache.glob("features-*.pt"))) == 2
    assert short.lengths().max() <= 16 < first.lengths().max()


def test_cached_features_unlabelled_split(tokenizer, data_root, tmp_path, monkeypatch):
    examples = get_task("boolq").load(data_root, "test")
    first = cached_features(tmp_path, tokenizer, examples, 32, regression=False)
    monkeypatch.setattr(batching, "tokenize", lambda *a, **k: pytest.fail("cache not used"))
    again = cached_features(tmp_path, tokenizer, examples, 32, regression=False)
    assert again.labels is None and _same(again, first)


@pytest.mark.parametrize("garbage", [b"truncated", b""])
def test_corrupt_cache_file_is_rebuilt(tokenizer, data_root, tmp_path, monkeypatch, garbage):
    examples = get_task("qqp").load(data_root, "dev")
    first = cached_features(tmp_path, tokenizer, examples, 32, regression=False)
    (path,) = tmp_path.glob("features-*.pt")
    path.write_bytes(garbage)
    calls = []
    real = batching.tokenize
    monkeypatch.setattr(batching, "tokenize", lambda *a, **k: calls.append(1) or real(*a, **k))
    rebuilt = cached_features(tmp_path, tokenizer, examples, 32, regression=False)
    assert calls == [1] and _same(rebuilt, first)
    assert _same(Features.from_state(torch.load(path, weights_only=True)), first)  # the file was rewritten


# ------------------------------------------------------------------------------------------ data order


def test_micro_batch_stream_two_epochs():
    n, mb = 10, 4
    s = MicroBatchStream(n, mb, seed=3)
    batches = [s.next() for _ in range(6)]  # two epochs of 4, 4, 2 rows
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    e0, e1 = np.concatenate(batches[:3]), np.concatenate(batches[3:])
    assert sorted(e0.tolist()) == list(range(n)) and sorted(e1.tolist()) == list(range(n))
    assert not np.array_equal(e0, e1)  # a fresh permutation each epoch
    assert s.epoch == 2
    other = MicroBatchStream(n, mb, seed=4)
    assert not np.array_equal(np.concatenate([other.next() for _ in range(3)]), e0)  # the seed matters
    same = MicroBatchStream(n, mb, seed=3)
    assert all(np.array_equal(b, same.next()) for b in batches)  # and fixes the order


def test_micro_batch_stream_exact_multiple():
    s = MicroBatchStream(8, 4, seed=0)
    batches = [s.next() for _ in range(4)]
    assert [len(b) for b in batches] == [4, 4, 4, 4]
    assert sorted(np.concatenate(batches[:2]).tolist()) == list(range(8))
    assert sorted(np.concatenate(batches[2:]).tolist()) == list(range(8))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_micro_batch_stream_resumes_at_position(k):
    fresh = MicroBatchStream(10, 4, seed=3)
    reference = [fresh.next() for _ in range(8)]
    resumed = MicroBatchStream(10, 4, seed=3, position=k)
    got = [resumed.next() for _ in range(8 - k)]
    assert all(np.array_equal(a, b) for a, b in zip(got, reference[k:]))
