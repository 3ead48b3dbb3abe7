"""Data files read by their format's rules (fine_tune/tasks/example.py, user.py): CSV by its quoting rules (a quoted
newline kept, the file's own line numbers, no field-size limit), .tsv one line one row with no quoting (stray quotes
never merge rows), text columns that are strings, ids that are integers exactly, a Parquet file pyarrow cannot read
as one line; GLUE's .tsv files by the same tab rule."""

from __future__ import annotations

import json

import pytest

from fine_tune.errors import UserError

LABELS = ["same", "different"]


def task_of(tmp_path, files, **fields):
    """The task ``mine`` under ``tmp_path`` with the data ``files`` (name -> text or bytes) and a definition reading
    columns first, second, verdict and id qid (``fields`` override it)."""
    from fine_tune.tasks.registry import user_task
    from fine_tune.tasks.user import check_definition

    folder = tmp_path / "mine"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    spec = {
        "files": {name.split(".")[0]: name for name in files},
        "text": "first",
        "text_pair": "second",
        "label": "verdict",
        "labels": LABELS,
        "id": "qid",
        **fields,
    }
    return user_task("mine", check_definition(spec, "task.json"))


def load(tmp_path, files, split=None, **fields):
    task = task_of(tmp_path, files, **fields)
    return task.load(tmp_path, split or next(iter(task.files)))


def refused(tmp_path, files, split=None, **fields) -> str:
    with pytest.raises(UserError) as e:
        load(tmp_path, files, split, **fields)
    return str(e.value)


# ------------------------------------------------------------------------------------------------- CSV


def test_csv_keeps_a_quoted_newline_and_counts_the_files_own_lines(tmp_path):
    """A cell in quotes spans lines 2-3 (a newline, a comma and a doubled quote inside): the text keeps them, and a
    bad row after it is named by its line in the file (5), not by its row count (4)."""
    good = 'qid,first,second,verdict\n1,"line one\nline two, ""quoted""",b,same\n2,c,d,different\n'
    rows = load(tmp_path, {"train.csv": good})
    assert [(e.idx, e.text, e.text_pair, e.label) for e in rows] == [
        (1, 'line one\nline two, "quoted"', "b", 0),
        (2, "c", "d", 1),
    ]
    crlf = good.replace("\n", "\r\n").replace("one\r\nline", "one\nline")  # Windows line ends, a bare \n in a cell
    assert [e.text for e in load(tmp_path, {"train.csv": crlf})][0] == 'line one\nline two, "quoted"'
    message = refused(tmp_path, {"train.csv": good + "3,e,f,maybe\n"})
    assert message == (
        f"{tmp_path}/mine/train.csv, line 5: label 'maybe' in column 'verdict' is not one of the "
        f"task's labels (same, different)"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ('qid,first,second,verdict\n1,"a"b,c,same\n', "line 2: not valid CSV (',' expected after '\"'"),
        (
            'qid,first,second,verdict\n1,a,b,same\n2,"never closed,b,same\n3,c,d,same\n',
            "line 3: not valid CSV (unexpected end of data",
        ),
        ("qid,first,second,verdict\n1,a,b,same\n2,a,b,same,extra\n", "line 3: 5 cells, the header (line 1) names 4"),
        ("qid,first,second,verdict\n1,a,b\n", "line 2: 3 cells, the header (line 1) names 4"),
        ("qid,first,first,verdict\n1,a,b,same\n", "line 1: the header names 'first' twice"),
    ],
)
def test_csv_that_breaks_its_rules_is_one_line(tmp_path, content, message):
    assert refused(tmp_path, {"train.csv": content}).startswith(f"{tmp_path}/mine/train.csv, {message}")


def test_a_cell_of_200000_characters_reads(tmp_path):
    """The csv module stops at 131,072 characters a cell by default (a _csv.Error traceback before): no limit."""
    long = "word " * 40_000
    rows = load(tmp_path, {"train.csv": f'qid,first,second,verdict\n1,"{long}",b,same\n'})
    assert rows[0].text == long and len(long) == 200_000
    rows = load(tmp_path, {"train.tsv": f"qid\tfirst\tsecond\tverdict\n1\t{long}\tb\tsame\n"})
    assert rows[0].text == long


# ------------------------------------------------------------------------------------------------- TSV


def test_tsv_is_one_line_one_row_and_quotes_are_characters(tmp_path):
    """96 rows, two of them with a stray quote (which, read with CSV quoting, merged the rows between them: 93
    examples and no message): all 96 are read, the quotes kept as written."""
    lines = [f"{i}\tq{i}\tp{i}\t{LABELS[i % 2]}" for i in range(96)]
    lines[10] = '10\t"so called\tp10\tsame'
    lines[13] = '13\tq13\tends with a quote"\tdifferent'
    rows = load(tmp_path, {"train.tsv": "qid\tfirst\tsecond\tverdict\n" + "\n".join(lines) + "\n"})
    assert len(rows) == 96 and rows[10].text == '"so called' and rows[13].text_pair == 'ends with a quote"'
    assert [e.idx for e in rows] == list(range(96))


def test_a_tsv_line_with_another_cell_count_is_refused_naming_it(tmp_path):
    content = "qid\tfirst\tsecond\tverdict\n1\ta\tb\tsame\n2\ta b\tsame\n"
    assert refused(tmp_path, {"train.tsv": content}) == (
        f"{tmp_path}/mine/train.tsv, line 3: 3 tab-separated cells (no quoting: one line, one row), the header "
        f"(line 1) names 4"
    )


def test_glue_tsv_files_share_the_tab_rule(tmp_path):
    """QQP (its own parser) and the GLUE layouts read .tsv files by the same rule: a quote is a character, a long
    cell reads, one line is one row."""
    from fine_tune.tasks.qqp import parse_qqp
    from fine_tune.tasks.registry import TASKS

    long = "x" * 200_000
    qqp = tmp_path / "train.tsv"
    qqp.write_text(
        f'id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n5\t1\t2\t"why\tnot "so"\t1\n6\t3\t4\t{long}\tb\t0\n'
    )
    assert [(e.idx, e.text, e.text_pair, e.label) for e in parse_qqp(qqp, True)] == [
        (5, '"why', 'not "so"', 1),
        (6, long, "b", 0),
    ]
    rte = tmp_path / "rte.tsv"
    rte.write_text('index\tsentence1\tsentence2\tlabel\n0\t"a\tb"\tentailment\n1\tc\td\tnot_entailment\n')
    assert [e.text for e in TASKS["rte"].parse(rte, True)] == ['"a', "c"]


# ------------------------------------------------------------------------------------ JSON lines, Parquet


@pytest.mark.parametrize(
    "value, shown",
    [
        (12345, "the number 12345"),
        (["a", "b"], 'the list ["a", "b"]'),
        (True, "true"),
        ({"t": "a"}, 'the object {"t": "a"}'),
    ],
)
def test_a_text_column_holds_strings(tmp_path, value, shown):
    """JSON lines and Parquet keep their values' types: a text that is not a string is refused (it became its
    Python repr before). CSV and .tsv cells are always text, so a number there is its digits."""
    for column in ("first", "second"):
        rows = [
            {"qid": 1, "first": "a", "second": "b", "verdict": "same"},
            {"qid": 2, "first": "a", "second": "b", "verdict": "same", column: value},
        ]
        content = "".join(json.dumps(r) + "\n" for r in rows)
        assert refused(tmp_path, {"train.jsonl": content}) == (
            f"{tmp_path}/mine/train.jsonl, line 2: column '{column}' holds {shown}; a text column holds strings"
        )
    assert load(tmp_path, {"train.csv": "qid,first,second,verdict\n1,12345,678,same\n"})[0].text == "12345"


@pytest.mark.parametrize(
    "fmt, raw, message",
    [
        ("jsonl", 1.5, "id 1.5 in column 'qid' is not an integer"),
        ("jsonl", 3.0, "id 3.0 in column 'qid' is not an integer"),
        ("jsonl", "1.5", "id '1.5' in column 'qid' is not an integer"),
        ("jsonl", True, "id true in column 'qid' is not an integer"),
        ("jsonl", "1_000", "id '1_000' in column 'qid' is not an integer"),
        ("csv", "1.5", "id '1.5' in column 'qid' is not an integer"),
        ("csv", "7a", "id '7a' in column 'qid' is not an integer"),
        ("csv", "1e3", "id '1e3' in column 'qid' is not an integer"),
    ],
)
def test_an_id_is_an_integer_exactly(tmp_path, fmt, raw, message):
    """A fractional id was truncated (1.5 -> 1: in the submission as another row's id); a float that happens to be
    whole (3.0) is refused as the official readers refuse it; digits in a text cell are an integer."""
    if fmt == "jsonl":
        content, line = json.dumps({"qid": raw, "first": "a", "second": "b"}) + "\n", 1
    else:
        content, line = f"qid,first,second\n{raw},a,b\n", 2
    assert refused(tmp_path, {f"test.{fmt}": content}) == f"{tmp_path}/mine/test.{fmt}, line {line}: {message}"


def test_integer_ids_are_read_exactly_and_reach_the_submission(tmp_path):
    import numpy as np

    content = "".join(
        json.dumps(r) + "\n"
        for r in [
            {"qid": 12, "first": "a", "second": "b"},
            {"qid": "-7", "first": "c", "second": "d"},
            {"qid": 2**62 + 1, "first": "e", "second": "f"},
        ]
    )
    task = task_of(tmp_path, {"test.jsonl": content})
    rows = task.load(tmp_path, "test")
    assert [e.idx for e in rows] == [12, -7, 2**62 + 1]
    task.write_submission(tmp_path / "out.tsv", rows, np.array([0, 1, 0]))
    assert (tmp_path / "out.tsv").read_text().splitlines()[1:] == ["12\tsame", "-7\tdifferent", f"{2**62 + 1}\tsame"]


def test_json_labels_boolean_and_regression_scores(tmp_path):
    """A JSON boolean label is the class written true/false; a regression score must be a number (true is not 1.0)."""
    rows = [{"first": "a", "second": "b", "verdict": True}, {"first": "c", "second": "d", "verdict": False}]
    content = "".join(json.dumps(r) + "\n" for r in rows)
    got = load(tmp_path, {"train.jsonl": content}, id=None, labels=["false", "true"])
    assert [e.label for e in got] == [1, 0]
    message = refused(tmp_path, {"train.jsonl": content}, id=None, labels=None, regression=True)
    assert message == (
        f"{tmp_path}/mine/train.jsonl, line 1: label true in column 'verdict' is not a number (a regression score)"
    )


def test_a_corrupt_parquet_file_is_one_line(tmp_path, monkeypatch):
    pa = pytest.importorskip(
        "pyarrow", reason="pyarrow reads .parquet files; without it the next test covers the one-line refusal"
    )
    import pyarrow.parquet as pq

    table = pa.table({"qid": [1, 2], "first": ["a", "b"], "second": ["c", "d"], "verdict": ["same", "different"]})
    pq.write_table(table, tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    assert [e.idx for e in load(tmp_path, {"train.parquet": data})] == [1, 2]
    message = refused(tmp_path, {"train.parquet": data[: len(data) // 2]})
    assert message.startswith(f"{tmp_path}/mine/train.parquet: not a readable Parquet file (")
    assert refused(tmp_path, {"train.parquet": b"not parquet at all"}).startswith(
        f"{tmp_path}/mine/train.parquet: not a readable Parquet file ("
    )
    pq.write_table(pa.table({"qid": [1], "first": [7], "second": ["c"], "verdict": ["same"]}), tmp_path / "n.parquet")
    assert refused(tmp_path, {"train.parquet": (tmp_path / "n.parquet").read_bytes()}) == (
        f"{tmp_path}/mine/train.parquet, row 1: column 'first' holds the number 7; a text column holds strings"
    )


def test_parquet_without_pyarrow_is_one_line(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert refused(tmp_path, {"train.parquet": b"PAR1"}) == (
        f"{tmp_path}/mine/train.parquet: reading .parquet needs pyarrow (pip install pyarrow)"
    )


# ------------------------------------------------------------- issue 29's adversarial run: exact ids, JSON limits


@pytest.mark.parametrize("raw", ["007", "+3", " 5 ", "-0", "5 "])
def test_an_id_cell_is_canonical_decimal(tmp_path, raw):
    """The prediction file wrote 7, 3, 5, 0 for these cells: the submission's ids were not the file's. A cell that
    is an integer only after reformatting is refused, saying how an id is written."""
    message = refused(tmp_path, {"test.csv": f'qid,first,second\n1,a,b\n"{raw}",a,b\n'})
    assert message == (
        f"{tmp_path}/mine/test.csv, line 3: id {raw!r} in column 'qid' is not an integer (as the file "
        f"writes it: digits, an optional '-', no leading zero, space or '+')"
    )


@pytest.mark.parametrize(
    "fmt, raw, shown",
    [
        ("jsonl", 2**64, str(2**64)),
        ("jsonl", 2**63, str(2**63)),
        ("csv", str(2**63), str(2**63)),
        ("csv", "1" * 5001, "'" + "1" * 39 + "..." + "1" * 11 + "' (5003 characters)"),
    ],
    ids=["2^64", "2^63", "csv_2^63", "csv_5001_digits"],
)
def test_an_id_fits_a_signed_64_bit_integer(tmp_path, fmt, raw, shown):
    """Ids beyond int64 were accepted for training and prediction, then an OverflowError in the evaluation table
    (and a 5001-digit CSV id a ValueError of Python's digit limit): refused when the file is read."""
    if fmt == "jsonl":
        content, line = json.dumps({"qid": raw, "first": "a", "second": "b"}) + "\n", 1
    else:
        content, line = f"qid,first,second\n{raw},a,b\n", 2
    assert refused(tmp_path, {f"test.{fmt}": content}) == (
        f"{tmp_path}/mine/test.{fmt}, line {line}: id {shown} in column 'qid' is outside the signed 64-bit range "
        f"(-9223372036854775808 to 9223372036854775807)"
    )
    edge = f"qid,first,second\n{-(2**63)},a,b\n{2**63 - 1},c,d\n0,e,f\n-12,g,h\n"
    assert [e.idx for e in load(tmp_path, {"test.csv": edge})] == [-(2**63), 2**63 - 1, 0, -12]


def test_a_duplicate_id_names_both_lines(tmp_path):
    content = "qid,first,second\n4,a,b\n7,c,d\n5,e,f\n7,g,h\n"
    assert refused(tmp_path, {"test.csv": content}) == (
        f"{tmp_path}/mine/test.csv, line 5: id 7 appears twice (first at line 3); a submission needs one row per id"
    )
    from fine_tune.tasks.qqp import parse_qqp

    qqp = tmp_path / "test.tsv"
    qqp.write_text("id\tquestion1\tquestion2\n3\ta\tb\n3\tc\td\n")
    with pytest.raises(UserError) as e:
        parse_qqp(qqp, False)
    assert str(e.value) == f"{qqp}, line 3: id 3 appears twice (first at line 2); a submission needs one row per id"


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"qid": 1, "first": "a", "first": "b", "second": "c"}', 'key "first" appears twice'),
        ('{"qid": 1, "first": ' + "[" * 5000 + "]" * 5000 + ', "second": "c"}', "nested too deep"),
        ('{"qid": 1' + "0" * 5000 + ', "first": "a", "second": "c"}', "an integer of more than 4300 digits"),
        # a lone surrogate escape: no character (the tokenizer raised a TypeError traceback mid-run, after config.json)
        (
            '{"qid": 1, "first": "a \\ud800 b", "second": "c"}',
            "a \\u escape of half a surrogate pair, which is no character: not Unicode text",
        ),
    ],
    ids=["key_twice", "nested_5000_deep", "integer_of_5001_digits", "lone_surrogate"],
)
def test_a_json_line_python_cannot_take_exactly_is_one_line(tmp_path, line, reason):
    """A key written twice kept its last value silently; deep nesting and Python's integer digit limit were
    tracebacks (RecursionError, ValueError)."""
    content = json.dumps({"qid": 0, "first": "a", "second": "b"}) + "\n" + line + "\n"
    assert (
        refused(tmp_path, {"test.jsonl": content}) == f"{tmp_path}/mine/test.jsonl, line 2: not valid JSON ({reason})"
    )


def test_a_huge_regression_score_is_not_finite(tmp_path):
    """1 followed by 400 zeros (a JSON integer) was an OverflowError traceback converting it to a float."""
    content = '{"first": "a", "second": "b", "verdict": 1' + "0" * 400 + "}\n"
    message = refused(tmp_path, {"train.jsonl": content}, id=None, labels=None, regression=True)
    assert message == (
        f"{tmp_path}/mine/train.jsonl, line 1: label 1{'0' * 39}...{'0' * 12} (401 characters) in "
        f"column 'verdict' is not a finite number"
    )


def test_a_boolean_label_is_shown_as_json_writes_it(tmp_path):
    """A JSON (or Parquet) boolean label outside the task's labels is shown `true`, as task.json would write it."""
    content = '{"first": "a", "second": "b", "verdict": true}\n'
    assert refused(tmp_path, {"train.jsonl": content}, id=None) == (
        f"{tmp_path}/mine/train.jsonl, line 1: label true in column 'verdict' is not one of the task's labels (same, "
        f"different)"
    )


def test_a_surrogate_pair_is_one_character_and_reads(tmp_path):
    content = '{"qid": 3, "first": "smile \\ud83d\\ude00", "second": "b"}\n'  # U+1F600 as JSON escapes it
    assert [e.text for e in load(tmp_path, {"test.jsonl": content})] == ["smile \U0001f600"]
