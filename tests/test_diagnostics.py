"""SuperGLUE's diagnostics scored locally (issue 30, item 7): AX-b by the Matthews correlation, AX-g by gender parity
over its minimal pairs and accuracy (Wang et al. 2019), as splits of ``rte_superglue`` that are scored with their own
metrics, predicted for the submission, and never trained on nor choosing a checkpoint. Hand-made files in the
official layouts (AX-b: sentence1, sentence2, label, idx written as text, diagnostic category fields; AX-g: premise,
hypothesis, label, idx, pair_id), unbalanced labels, pair_ids that are neither row numbers nor on adjacent rows; every
number is computed again here, by hand or from the confusion counts."""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fine_tune.errors import UserError
from fine_tune.tasks import get_task
from fine_tune.tasks.metrics import compute

RTE = get_task("rte_superglue")
NLI2 = ("entailment", "not_entailment")  # the model's classes: entailment 0, not_entailment 1


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# AX-b as the official file writes it: idx as text ("idx": "0"), the diagnostic categories of a row where it has
# them; 7 not_entailment, 3 entailment
AXB = [
    {
        "sentence1": "The cat sat on the mat.",
        "sentence2": "The cat did not sit on the mat.",
        "label": "not_entailment",
        "idx": "0",
        "logic": "Negation",
    },
    {
        "sentence1": "The cat did not sit on the mat.",
        "sentence2": "The cat sat on the mat.",
        "label": "not_entailment",
        "idx": "1",
        "logic": "Negation",
    },
    {
        "sentence1": "When you've got no snow, it's really hard to learn a snow sport.",
        "sentence2": "When you've got snow, it's really hard to learn a snow sport.",
        "label": "not_entailment",
        "idx": "2",
        "logic": "Negation;Conditionals",
    },
    {
        "sentence1": "Tulsi Gabbard disagrees with Bernie Sanders.",
        "sentence2": "Bernie Sanders disagrees with Tulsi Gabbard.",
        "label": "entailment",
        "idx": "3",
        "lexical-semantics": "Symmetry/Collectivity",
    },
    {
        "sentence1": "The dog barked loudly.",
        "sentence2": "The dog barked.",
        "label": "entailment",
        "idx": "4",
        "lexical-semantics": "Redundancy",
    },
    {
        "sentence1": "Some birds can fly.",
        "sentence2": "All birds can fly.",
        "label": "not_entailment",
        "idx": "5",
        "logic": "Universal",
    },
    {
        "sentence1": "She bought a car.",
        "sentence2": "She bought a vehicle.",
        "label": "entailment",
        "idx": "6",
        "lexical-semantics": "Lexical entailment",
    },
    {
        "sentence1": "He might come.",
        "sentence2": "He will come.",
        "label": "not_entailment",
        "idx": "7",
        "logic": "Intervals/Numbers",
    },
    {
        "sentence1": "Paris is in France.",
        "sentence2": "Paris is in Spain.",
        "label": "not_entailment",
        "idx": "8",
        "knowledge": "World knowledge",
    },
    {
        "sentence1": "The vase broke.",
        "sentence2": "Someone broke the vase on purpose.",
        "label": "not_entailment",
        "idx": "9",
        "predicate-argument-structure": "Core args",
    },
]

# AX-g with pair_ids shared by a pair's two rows, which are not adjacent and whose pair_ids are not row numbers:
# pairs 551650 (rows 0, 2), 551700 (rows 1, 4), 551662 (rows 3, 5)
AXG = [
    {
        "hypothesis": "The accountant sought help filing taxes.",
        "idx": 0,
        "label": "not_entailment",
        "pair_id": 551650,
        "premise": "The taxpayer met with the accountant to get help filing his taxes.",
    },
    {
        "hypothesis": "The customer could pay with cash.",
        "idx": 1,
        "label": "entailment",
        "pair_id": 551700,
        "premise": "The technician told the customer that he could pay with cash.",
    },
    {
        "hypothesis": "The accountant sought help filing taxes.",
        "idx": 2,
        "label": "not_entailment",
        "pair_id": 551650,
        "premise": "The taxpayer met with the accountant to get help filing her taxes.",
    },
    {
        "hypothesis": "The supervisor gave feedback.",
        "idx": 3,
        "label": "entailment",
        "pair_id": 551662,
        "premise": "The employee gave the supervisor feedback on his managing style.",
    },
    {
        "hypothesis": "The customer could pay with cash.",
        "idx": 4,
        "label": "entailment",
        "pair_id": 551700,
        "premise": "The technician told the customer that she could pay with cash.",
    },
    {
        "hypothesis": "The supervisor gave feedback.",
        "idx": 5,
        "label": "entailment",
        "pair_id": 551662,
        "premise": "The employee gave the supervisor feedback on her managing style.",
    },
]


def load(tmp_path: Path, split: str, rows: list[dict]):
    folder = {"axb": "AX-b", "axg": "AX-g"}[split]
    write_jsonl(tmp_path / folder / f"{folder}.jsonl", rows)
    return RTE.load(tmp_path, split)


def mcc_by_hand(labels, preds) -> float:
    """Matthews correlation from the confusion counts (class 1 positive; the value is symmetric in the classes)."""
    y, p = np.asarray(labels), np.asarray(preds)
    tp, tn = float(((p == 1) & (y == 1)).sum()), float(((p == 0) & (y == 0)).sum())
    fp, fn = float(((p == 1) & (y == 0)).sum()), float(((p == 0) & (y == 1)).sum())
    return (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


# ---------------------------------------------------------------------------------------------------------------
# what a split is: labelled for scoring, its own metrics, never training data nor a chooser
# ---------------------------------------------------------------------------------------------------------------


def test_the_diagnostics_are_scored_splits_with_their_own_metrics():
    assert (RTE.metrics, RTE.main_metric, RTE.dev_split) == (("accuracy",), "accuracy", "val")  # the task's own
    assert RTE.metrics_for("val") == RTE.metrics_for("train") == ("accuracy",)
    assert RTE.metrics_for("axb") == ("mcc", "accuracy") and RTE.metrics_for("axg") == ("gender_parity", "accuracy")
    assert RTE.labelled == {"train", "val"}  # train and choose checkpoints: never the diagnostics
    assert [s for s in RTE.splits if RTE.has_labels(s)] == list(RTE.scored) == ["train", "val", "axb", "axg"]
    assert not RTE.has_labels("test")
    for split in ("axb", "axg"):
        for flag, use in (("--dataset", "training data"), ("--select_on", "the split that chooses a checkpoint")):
            with pytest.raises(
                UserError,
                match=f"^{flag} {split}: a diagnostic split of rte_superglue, only scored "
                f"\\(run_fine_tune_eval.py\\) and predicted for the submission, never "
                f"{use}$",
            ):
                RTE.check_not_diagnostic(split, flag, use)
    RTE.check_not_diagnostic("val", "--select_on", "x")
    RTE.check_not_diagnostic("train", "--dataset", "x")
    mnli = get_task("mnli")  # GLUE's AX: released without labels, predicted only
    assert not mnli.has_labels("ax") and not mnli.diagnostics and "without labels" in mnli.unlabelled_why["ax"]


# ---------------------------------------------------------------------------------------------------------------
# AX-b: the Matthews correlation
# ---------------------------------------------------------------------------------------------------------------


def test_axb_reads_the_official_layout_and_is_scored_by_mcc(tmp_path):
    rows = load(tmp_path, "axb", AXB)
    assert [r.idx for r in rows] == list(range(10))  # "idx": "0" ... read as the integers they write
    assert [(r.text, r.text_pair) for r in rows] == [(a["sentence1"], a["sentence2"]) for a in AXB]
    labels = np.array([r.label for r in rows])
    assert labels.tolist() == [NLI2.index(a["label"]) for a in AXB] and labels.sum() == 7  # unbalanced: 7 of 10
    assert all(r.group is None for r in rows)
    # tp 5 (not_entailment right), fn 2, fp 1, tn 2
    preds = np.array([1, 1, 0, 1, 0, 1, 0, 1, 1, 0])
    got = compute(RTE.metrics_for("axb"), labels, preds)
    assert got["mcc"] == pytest.approx(mcc_by_hand(labels, preds), abs=1e-12)
    assert got["mcc"] == pytest.approx((5 * 2 - 1 * 2) / math.sqrt(6 * 7 * 3 * 4), abs=1e-12)
    assert got["accuracy"] == pytest.approx(0.7) and abs(got["mcc"] - got["accuracy"]) > 0.3
    # the submission writes the ids back as the integers they are
    out = tmp_path / "AX-b.jsonl"
    RTE.write_submission(out, rows, preds)
    assert [json.loads(x) for x in out.read_text().splitlines()][:3] == [
        {"idx": 0, "label": "not_entailment"},
        {"idx": 1, "label": "not_entailment"},
        {"idx": 2, "label": "entailment"},
    ]


def test_axb_ids_are_required_unique_and_exact(tmp_path):
    no_idx = [dict(AXB[0]), {k: v for k, v in AXB[1].items() if k != "idx"}]
    with pytest.raises(UserError, match=r"AX-b.jsonl, line 2: missing field 'idx'"):
        load(tmp_path, "axb", no_idx)
    with pytest.raises(UserError, match=r"AX-b.jsonl, line 3: id 1 appears twice \(first at line 2\)"):
        load(tmp_path, "axb", [AXB[0], AXB[1], dict(AXB[2], idx=1)])
    with pytest.raises(UserError, match=r"AX-b.jsonl, line 1: id '007' in column 'idx' is not an integer"):
        load(tmp_path, "axb", [dict(AXB[0], idx="007")])
    with pytest.raises(UserError, match=r"AX-b.jsonl, line 1: missing 'label' in a labelled split"):
        load(tmp_path, "axb", [{k: v for k, v in AXB[0].items() if k != "label"}])


# ---------------------------------------------------------------------------------------------------------------
# AX-g: minimal pairs and gender parity
# ---------------------------------------------------------------------------------------------------------------


def parity_by_hand(pair_of_row: list[int], preds) -> float:
    """The share of pairs whose two predictions agree, from a row -> pair list written out here."""
    by_pair: dict[int, list[int]] = {}
    for pair, p in zip(pair_of_row, preds):
        by_pair.setdefault(pair, []).append(int(p))
    assert all(len(v) == 2 for v in by_pair.values())
    return sum(v[0] == v[1] for v in by_pair.values()) / len(by_pair)


def test_axg_pairs_rows_by_pair_id_and_scores_gender_parity_and_accuracy(tmp_path):
    rows = load(tmp_path, "axg", AXG)
    assert [r.group for r in rows] == [a["pair_id"] for a in AXG]  # the pair's pair_id, not row numbers
    labels = np.array([r.label for r in rows])
    assert labels.tolist() == [1, 0, 1, 0, 0, 0]
    # pair 551650 (rows 0, 2): both not_entailment, alike; 551700 (rows 1, 4): entailment then not_entailment,
    # different; 551662 (rows 3, 5): alike. Parity 2/3 by hand; accuracy 5/6 (row 4 wrong)
    preds = np.array([1, 0, 1, 0, 1, 0])
    got = compute(RTE.metrics_for("axg"), labels, preds, np.array([r.group for r in rows], dtype=object))
    assert got == pytest.approx({"gender_parity": 2 / 3, "accuracy": 5 / 6}, abs=1e-12)
    assert got["gender_parity"] == pytest.approx(parity_by_hand([a["pair_id"] for a in AXG], preds))
    # pairing adjacent rows (0-1, 2-3, 4-5) would give 0, by row number or idx the same: the pairs are pair_id's
    assert parity_by_hand([0, 0, 1, 1, 2, 2], preds) == 0.0
    # every pair alike: 1, whatever the labels; every pair split: 0
    assert (
        compute(("gender_parity",), labels, np.ones(6, dtype=int), np.array([r.group for r in rows]))["gender_parity"]
        == 1.0
    )
    assert (
        compute(("gender_parity",), labels, np.array([0, 0, 1, 0, 1, 1]), np.array([r.group for r in rows]))[
            "gender_parity"
        ]
        == 0.0
    )


def test_axg_with_a_pair_id_per_row_pairs_consecutive_rows_as_jiant_does(tmp_path):
    """One pair_id per sentence (the DNC's numbering; the released AX-g's row 0 has 551646): rows 2k and 2k+1 are
    the k-th pair (jiant's GenderParity), whatever the pair_ids' order."""
    his_her = [("his", 551646), ("her", 551648), ("his", 551647), ("her", 551649), ("his", 551702), ("her", 551650)]
    rows = [
        {
            "hypothesis": f"h{i // 2}",
            "idx": 10 + i,
            "label": NLI2[i % 2],
            "pair_id": pid,
            "premise": f"p{i // 2} {pron}",
        }
        for i, (pron, pid) in enumerate(his_her)
    ]
    got = load(tmp_path, "axg", rows)
    assert [r.group for r in got] == [551646, 551646, 551647, 551647, 551702, 551702]
    preds = np.array([1, 1, 0, 1, 1, 1])  # pairs: alike, different, alike
    assert compute(("gender_parity",), np.array([r.label for r in got]), preds, np.array([r.group for r in got]))[
        "gender_parity"
    ] == pytest.approx(2 / 3)


AXG_REFUSED = {
    # a row without its pair_id: one line naming the file and line
    "no_pair_id": (
        [AXG[0], AXG[1], {k: v for k, v in AXG[2].items() if k != "pair_id"}],
        r"AX-g.jsonl, line 3: missing field 'pair_id' \(AX-g is scored in minimal pairs: gender parity "
        r"compares the predictions of a pair's two rows\)$",
    ),
    "pair_id_not_an_integer": (
        [dict(AXG[0], pair_id="p1")] + AXG[1:],
        r"AX-g.jsonl, line 1: id 'p1' in column 'pair_id' is not an integer$",
    ),
    "pair_id_on_three_rows": (
        AXG + [dict(AXG[0], idx=6, premise="The taxpayer met them.")],
        r"AX-g.jsonl, line 1: pair_id 551650 names 3 rows \(line 1, line 3, line 7\); a minimal "
        r"pair is two rows$",
    ),
    "pair_id_alone_among_pairs": (
        AXG + [dict(AXG[0], idx=6, pair_id=9)],
        r"AX-g.jsonl, line 7: pair_id 9 names this row alone while other pair_ids name two "
        r"rows \(line 1 and line 3 share 551650\): the row has no partner to compare its "
        r"prediction with$",
    ),
    "odd_rows_of_own_ids": (
        [dict(a, pair_id=100 + i) for i, a in enumerate(AXG[:3])],
        r"AX-g.jsonl, line 3: the last of 3 rows has no partner: every row has a pair_id of its "
        r"own, so consecutive rows are the minimal pairs \(rows 1-2, 3-4, ...: jiant's rule\), and "
        r"an odd count leaves one alone$",
    ),
    "pair_hypotheses_differ": (
        [AXG[0], AXG[1], dict(AXG[2], hypothesis="The taxpayer sought help.")] + AXG[3:],
        r"AX-g.jsonl, line 3: this row and line 1 are a minimal pair \(pair_id 551650\) but "
        r"their hypotheses differ; a pair differs only in the gender of the premise's pronoun$",
    ),
    "consecutive_hypotheses_differ": (
        [dict(a, pair_id=100 + i) for i, a in enumerate(AXG[:4])],
        r"AX-g.jsonl, line 2: this row and line 1 are a minimal pair \(consecutive rows, "
        r"each with a pair_id of its own\) but their hypotheses differ",
    ),
}


@pytest.mark.parametrize("case", sorted(AXG_REFUSED))
def test_axg_file_that_is_not_minimal_pairs_is_refused_in_one_line(tmp_path, case):
    rows, message = AXG_REFUSED[case]
    with pytest.raises(UserError) as err:
        load(tmp_path, "axg", rows)
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(tmp_path / "AX-g" / "AX-g.jsonl")), line
    assert re.search(message, line), line


def test_max_examples_that_cut_a_pair_are_refused_naming_a_count_that_keeps_pairs_whole(tmp_path):
    from fine_tune.tasks.diagnostics import check_whole_pairs, whole_pairs_prefix

    rows = load(tmp_path, "axg", AXG)
    path = RTE.path(tmp_path, "axg")
    groups = [r.group for r in rows]
    assert [whole_pairs_prefix(groups, n) for n in range(7)] == [0, 0, 0, 0, 0, 0, 6]  # pairs interleave to the end
    consecutive = [1, 1, 2, 2, 3, 3]
    assert [whole_pairs_prefix(consecutive, n) for n in range(7)] == [0, 0, 2, 2, 4, 4, 6]
    check_whole_pairs(rows, path, None)
    with pytest.raises(
        UserError,
        match=rf"^--max_examples 3: the first 3 rows of {path} hold one row of the minimal "
        rf"pair 551700 \(row id 1\) but not the other; gender parity compares both: "
        rf"evaluate the whole split$",
    ):
        check_whole_pairs(rows[:3], path, 3)
    ordered = [replace(r, group=g) for r, g in zip(rows, consecutive)]
    with pytest.raises(
        UserError,
        match=r"--max_examples 5: .* evaluate the whole split; --max_examples 4 keeps whole "
        r"pairs$",
    ):
        check_whole_pairs(ordered[:5], path, 5)


# ---------------------------------------------------------------------------------------------------------------
# end to end: a tiny RTE model evaluated on val, AX-b and AX-g; the results table; the submission files
# ---------------------------------------------------------------------------------------------------------------


def write_rte_superglue(root: Path, seed: int = 0) -> None:
    """RTE's train/val/test (.jsonl, premise/hypothesis, a cue word a tiny model can learn) and the two diagnostics
    (AXB, and AX-g: AXG's pairs with a fourth pair, 8 rows)."""
    rng = random.Random(seed)
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "park", "home"]

    def rows(n, labelled, first_id=0):
        out = []
        for i in range(n):
            y = rng.randrange(2)
            row = {
                "premise": " ".join(rng.choice(words) for _ in range(rng.randint(4, 10))),
                "hypothesis": ("yes " if y == 0 else "no ") + " ".join(rng.choice(words) for _ in range(3)),
                "idx": first_id + i,
            }
            if labelled:
                row["label"] = NLI2[y]
            out.append(row)
        return out

    write_jsonl(root / "RTE" / "train.jsonl", rows(64, True))
    write_jsonl(root / "RTE" / "val.jsonl", rows(24, True))
    write_jsonl(root / "RTE" / "test.jsonl", rows(8, False, 300))
    write_jsonl(root / "AX-b" / "AX-b.jsonl", AXB)
    write_jsonl(
        root / "AX-g" / "AX-g.jsonl",
        AXG
        + [
            {
                "hypothesis": "no The nurse was tired.",
                "idx": 6,
                "label": "not_entailment",
                "pair_id": 551800,
                "premise": "The nurse notified the patient that his shift would be ending in an hour.",
            },
            {
                "hypothesis": "no The nurse was tired.",
                "idx": 7,
                "label": "not_entailment",
                "pair_id": 551800,
                "premise": "The nurse notified the patient that her shift would be ending in an hour.",
            },
        ],
    )


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = lines[0].strip("|").split("|")
    return header, {c[0]: dict(zip(header, c)) for c in (line.strip("|").split("|") for line in lines[2:])}


COMMON = ["--model", "bert", "--task", "rte_superglue"]


def test_eval_scores_the_diagnostics_and_the_table_reports_them_at_the_dev_checkpoint(
    run, tiny_bert, data_root, exp_root
):
    write_rte_superglue(data_root)
    run(
        "run_fine_tune.py",
        "--experiment",
        "t",
        "--ptrain_ver",
        str(tiny_bert),
        *COMMON,
        "--max_seq_len",
        "32",
        "--device_id",
        "-1",
        "--total_step",
        "6",
        "--warmup_step",
        "1",
        "--ckpt_step",
        "2",
        "--batch_size",
        "16",
        "--lr",
        "1e-3",
    )
    exp = exp_root / "t_bert_rte_superglue"
    outs = {
        split: run("run_fine_tune_eval.py", "--experiment", "t", *COMMON, "--dataset", split).stdout
        for split in ("val", "axb", "axg")
    }
    tables = {s: json.loads((exp / f"eval-{s}.json").read_text()) for s in outs}
    assert [r["ckpt"] for r in tables["axg"]["rows"]] == [2, 4, 6]
    # each split holds its own metrics: val the task's (accuracy), the diagnostics theirs
    assert {k for r in tables["val"]["rows"] for k in r} == {"ckpt", "accuracy", "loss", "examples_per_s"}
    assert {k for r in tables["axb"]["rows"] for k in r} == {"ckpt", "mcc", "accuracy", "loss", "examples_per_s"}
    assert {k for r in tables["axg"]["rows"] for k in r} == {
        "ckpt",
        "gender_parity",
        "accuracy",
        "loss",
        "examples_per_s",
    }
    assert "best accuracy" in outs["val"] and "best" not in outs["axg"].split("\n", 2)[-1]
    assert "8 rows, 4 minimal pairs" in outs["axg"] and "never choosing a checkpoint" in outs["axg"]
    assert tables["axg"]["selection"].startswith("a diagnostic: scored at every checkpoint, never choosing one")
    # every number again from the predictions and the files' own labels and pairs
    pair = {
        a["idx"]: a["pair_id"] for a in map(json.loads, (data_root / "AX-g" / "AX-g.jsonl").read_text().splitlines())
    }
    for split in ("axb", "axg"):
        with np.load(exp / f"eval-{split}-predictions.npz") as z:
            idx, labels, preds = (
                z["idx"],
                z["labels"],
                {r["ckpt"]: z[f"pred_{r['ckpt']}"] for r in tables[split]["rows"]},
            )
        gold = [
            NLI2.index(json.loads(x)["label"])
            for x in (
                data_root / ("AX-b" if split == "axb" else "AX-g") / f"{'AX-b' if split == 'axb' else 'AX-g'}.jsonl"
            )
            .read_text()
            .splitlines()
        ]
        assert labels.tolist() == gold
        for row in tables[split]["rows"]:
            p = preds[row["ckpt"]]
            assert row["accuracy"] == pytest.approx(np.mean(p == np.array(gold)), abs=1e-12)
            if split == "axb":
                from sklearn.metrics import matthews_corrcoef

                assert row["mcc"] == pytest.approx(matthews_corrcoef(gold, p), abs=1e-12)
            else:
                assert row["gender_parity"] == pytest.approx(parity_by_hand([pair[i] for i in idx.tolist()], p))

    # the results table: the diagnostics' metrics in their own columns, at the checkpoint the val split chooses
    proc = run("results_table.py", "--task", "rte_superglue", "--exp_root", str(exp_root))
    header, rows = parse_table(proc.stdout)
    inference = tables["val"]["inference"]  # one speed: the val evaluation's, how it was measured in its header
    speed = f"ex/s (PyTorch, evaluation, cpu, {inference['precision']}, batch {inference['batch_size']})"
    assert header[3:] == [
        "val acc",
        "val ckpt (best)",
        "axb MCC",
        "axb acc",
        "axb ckpt (best on val)",
        "axg gender parity",
        "axg acc",
        "axg ckpt (best on val)",
        "params",
        speed,
    ]
    best_val = max(tables["val"]["rows"], key=lambda r: (r["accuracy"], r["ckpt"]))["ckpt"]
    row = rows["t"]
    assert row["val ckpt (best)"] == row["axb ckpt (best on val)"] == row["axg ckpt (best on val)"] == str(best_val)
    at = {s: next(r for r in tables[s]["rows"] if r["ckpt"] == best_val) for s in ("axb", "axg")}
    assert (
        row["axb MCC"] == f"{at['axb']['mcc']:.4f}"
        and row["axg gender parity"] == f"{at['axg']['gender_parity']:.4f}"
        and row["axg acc"] == f"{at['axg']['accuracy']:.4f}"
    )
    assert "axg: best checkpoint on val" in proc.stdout and "Diagnostics (axb, axg)" in proc.stdout
    # the throughput is the val evaluation's, not a diagnostic's
    assert row[speed] == f"{inference['examples_per_s']:.0f}"
    data = json.loads((exp_root / "results-rte_superglue.json").read_text())
    assert data["split_metrics"] == {
        "val": ["accuracy"],
        "axb": ["mcc", "accuracy"],
        "axg": ["gender_parity", "accuracy"],
    }
    assert data["rows"][0]["splits"]["axg"]["diagnostic"] is True
    csv_header = (exp_root / "results-rte_superglue.csv").read_text().splitlines()[0].split(",")
    assert "axg gender_parity mean" in csv_header and "val gender_parity mean" not in csv_header

    # predicted for the submission as before: the official names, the files' ids (AX-b's written as integers)
    for split, name, ids in (("axb", "AX-b.jsonl", list(range(10))), ("axg", "AX-g.jsonl", list(range(8)))):
        run("generate_test_prediction.py", "--experiment", "t", *COMMON, "--dataset", split, "--ckpt", "best")
        written = [json.loads(x) for x in (exp / name).read_text().splitlines()]
        assert [w["idx"] for w in written] == ids and {w["label"] for w in written} <= set(NLI2)

    # never training data, never the chooser; --max_examples that cuts a pair: refused, nothing written
    before = {p: p.read_bytes() for p in exp.iterdir() if p.is_file()}
    refused = [
        (
            (
                "run_fine_tune.py",
                "--experiment",
                "u",
                "--ptrain_ver",
                str(tiny_bert),
                *COMMON,
                "--dataset",
                "axb",
                "--max_seq_len",
                "32",
                "--device_id",
                "-1",
                "--total_step",
                "2",
                "--warmup_step",
                "1",
            ),
            "--dataset axb: a diagnostic split of rte_superglue, only scored (run_fine_tune_eval.py) and predicted for "
            "the submission, never training data",
        ),
        (
            (
                "generate_test_prediction.py",
                "--experiment",
                "t",
                *COMMON,
                "--dataset",
                "axg",
                "--ckpt",
                "best",
                "--select_on",
                "axg",
                "--overwrite",
            ),
            "--select_on axg: a diagnostic split",
        ),
        (
            ("run_fine_tune_gen_logits.py", "--experiment", "t", *COMMON, "--dataset", "axb", "--ckpt", "2"),
            "never a logits data set to train on",
        ),
        (
            ("results_table.py", "--task", "rte_superglue", "--select_on", "axb", "--overwrite"),
            "--select_on axb: a diagnostic split",
        ),
        (
            (
                "results_table.py",
                "--task",
                "rte_superglue",
                "--compare",
                "t_bert_rte_superglue",
                "t_bert_rte_superglue",
                "--compare_split",
                "axg",
                "--overwrite",
            ),
            "--compare_split axg: a diagnostic split",
        ),
        (
            ("run_fine_tune_eval.py", "--experiment", "t", *COMMON, "--dataset", "axg", "--max_examples", "3"),
            "--max_examples 3: the first 3 rows of",
        ),
    ]
    for args, message in refused:
        proc = run(*args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert not (exp_root / "u_bert_rte_superglue").exists()
    assert {p: p.read_bytes() for p in exp.iterdir() if p.is_file()} == before
    assert not (data_root / "logits").exists()


def write_evaluated(
    root: Path, folder: str, seed: int, evals: dict[str, dict[int, dict[str, float]]], lr: float = 1e-4
) -> None:
    """An rte_superglue experiment as run_fine_tune_eval.py leaves it: per split the rows of metrics by checkpoint
    (``evals``), a checkpoint file for each step."""
    import torch

    d = root / folder
    d.mkdir(parents=True)
    (d / "config.json").write_text(
        json.dumps(
            {"task": "rte_superglue", "model": "bert", "seed": seed, "lr": lr, "experiment": folder.split("_")[0]}
        )
    )
    steps = sorted({c for rows in evals.values() for c in rows})
    for split, rows in evals.items():
        table = {
            "task": "rte_superglue",
            "split": split,
            "rows": [{"ckpt": c, **m, "examples_per_s": 10.0 * c} for c, m in sorted(rows.items())],
            "inference": {"examples_per_s": {"val": 200.0, "axb": 5.0, "axg": 7.0}[split], "device": "cpu"},
        }
        (d / f"eval-{split}.json").write_text(json.dumps(table))
    for c in steps:
        torch.save({"w": torch.zeros(10)}, d / f"model-{c}.pt")


def test_the_table_reports_a_diagnostic_at_the_checkpoint_the_dev_split_chooses(run, tmp_path):
    """Each seed's diagnostics are read at the checkpoint best on val (not at their own best, nor pooled with val's
    numbers); under --rule last at the last one; an experiment evaluated on axg but not on val has no axg cell, and a
    note says why; the throughput and the Pareto plot are val's."""
    root = tmp_path / "exp"
    gp = lambda g, a: {"gender_parity": g, "accuracy": a}  # noqa: E731
    # seed 1: val best at 20; axg best at 30, axb best at 10. seed 2: val best at 30
    write_evaluated(
        root,
        "ft_s1_bert_rte_superglue",
        1,
        {
            "val": {10: {"accuracy": 0.6}, 20: {"accuracy": 0.8}, 30: {"accuracy": 0.7}},
            "axb": {
                10: {"mcc": 0.4, "accuracy": 0.9},
                20: {"mcc": 0.1, "accuracy": 0.55},
                30: {"mcc": 0.3, "accuracy": 0.6},
            },
            "axg": {10: gp(0.9, 0.5), 20: gp(0.5, 0.625), 30: gp(1.0, 0.75)},
        },
    )
    write_evaluated(
        root,
        "ft_s2_bert_rte_superglue",
        2,
        {
            "val": {10: {"accuracy": 0.5}, 20: {"accuracy": 0.6}, 30: {"accuracy": 0.65}},
            "axb": {
                10: {"mcc": 0.8, "accuracy": 0.8},
                20: {"mcc": 0.7, "accuracy": 0.7},
                30: {"mcc": 0.2, "accuracy": 0.4},
            },
            "axg": {10: gp(1.0, 1.0), 20: gp(1.0, 0.9), 30: gp(0.75, 0.5)},
        },
    )
    write_evaluated(root, "other_bert_rte_superglue", 1, {"axg": {10: gp(0.25, 0.25)}}, lr=3e-5)  # no val
    out = tmp_path / "t.md"
    proc = run("results_table.py", "--task", "rte_superglue", "--exp_root", str(root), "--out", str(out), "--plot")
    header, rows = parse_table(proc.stdout)
    ms = lambda a, b: f"{(a + b) / 2:.4f} ± {abs(a - b) / math.sqrt(2):.4f} (n=2)"  # noqa: E731
    ft = rows["ft (seeds 1,2)"]
    on_val = " ckpt (best on val)"
    assert (ft["val acc"], ft["val ckpt (best)"]) == (ms(0.8, 0.65), "20,30")
    assert (ft["axg gender parity"], ft["axg acc"], ft["axg" + on_val]) == (ms(0.5, 0.75), ms(0.625, 0.5), "20,30")
    assert (ft["axb MCC"], ft["axb acc"], ft["axb" + on_val]) == (ms(0.1, 0.2), ms(0.55, 0.4), "20,30")
    assert ft["ex/s (PyTorch, evaluation, cpu)"] == "200"  # val's evaluation, not a diagnostic's
    other = rows["other"]
    assert (other["axg gender parity"], other["axg" + on_val], other["val acc"]) == ("—", "—", "—")
    assert (
        "other_bert_rte_superglue: axg evaluated but not val, which chooses the checkpoint axg is reported at: "
        "evaluate val too" in proc.stdout
    )
    pareto = json.loads((tmp_path / "t-pareto.json").read_text())
    assert (pareto["split"], pareto["metric"]) == ("val", "accuracy")
    # --rule last: each split's last evaluated checkpoint (30)
    proc = run(
        "results_table.py",
        "--task",
        "rte_superglue",
        "--exp_root",
        str(root),
        "--out",
        str(out),
        "--rule",
        "last",
        "--experiments",
        "ft_*",
    )
    ft = parse_table(proc.stdout)[1]["ft (seeds 1,2)"]
    assert (ft["axg gender parity"], ft["axg ckpt (last)"]) == (ms(1.0, 0.75), "30,30")
    # --splits axg alone: still chosen on val
    proc = run(
        "results_table.py",
        "--task",
        "rte_superglue",
        "--exp_root",
        str(root),
        "--out",
        str(out),
        "--splits",
        "axg",
        "--experiments",
        "ft_*",
    )
    header, rows = parse_table(proc.stdout)
    assert header[3:6] == ["axg gender parity", "axg acc", "axg ckpt (best on val)"]
    assert rows["ft (seeds 1,2)"]["axg ckpt (best on val)"] == "20,30"


def test_an_evaluation_of_a_diagnostic_must_hold_its_own_metrics(run, tmp_path):
    root = tmp_path / "exp"
    write_evaluated(
        root, "ft_bert_rte_superglue", 1, {"val": {10: {"accuracy": 0.5}}, "axg": {10: {"accuracy": 0.5}}}
    )  # no gender_parity
    proc = run("results_table.py", "--task", "rte_superglue", "--exp_root", str(root), check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"error: {root}/ft_bert_rte_superglue/eval-axg.json: not an evaluation table written by run_fine_tune_eval.py "
        f"('rows')"
    )


def test_the_rows_sha256_covers_the_pairs_and_is_unchanged_for_rows_without_one():
    """Evaluations, caches and submission records key on the rows' sha256: a row's pair is part of it (pairing AX-g
    otherwise is other rows), and rows without one hash exactly as before (every evaluation written before stays
    valid)."""
    import hashlib

    from fine_tune.tasks.example import Example, examples_digest

    rows = [Example(3, "a b", "c", 1), Example(-7, "d", None, 0.25)]
    before = hashlib.sha256(b"3\x1f'a b'\x1f'c'\x1f1\x1e-7\x1f'd'\x1fNone\x1f0.25\x1e").hexdigest()
    assert examples_digest(rows) == before
    paired = [replace(rows[0], group=551650), replace(rows[1], group=551650)]
    assert (
        len(
            {
                examples_digest(rows),
                examples_digest(paired),
                examples_digest([paired[0], replace(paired[1], group=551651)]),
            }
        )
        == 3
    )


def test_glue_ax_has_no_labels_and_says_so(run, exp_root):
    folder = exp_root / "t_bert_mnli"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"task": "mnli", "max_seq_len": 32}))
    proc = run(
        "run_fine_tune_eval.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "mnli",
        "--dataset",
        "ax",
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: --dataset 'ax' has no labels to evaluate against: GLUE's diagnostic (AX) is released without labels; "
        "the GLUE server scores it (R3, a Matthews correlation over the three classes): predict it with "
        "generate_test_prediction.py --task mnli --dataset ax and submit AX.tsv"
    )


def test_a_submission_predicted_before_the_diagnostics_were_scored_is_still_taken(tmp_path):
    """A prediction record written when the diagnostics were read without labels (its rows' sha256 of that reading)
    still matches its split; a record of other rows does not."""
    from fine_tune.submission import check_prediction_file, prediction_record, record_path
    from fine_tune.tasks.example import examples_digest

    rows = load(tmp_path, "axg", AXG)
    out = tmp_path / "exp" / "AX-g.jsonl"
    out.parent.mkdir()
    text = RTE.submission_text(rows, [0] * len(rows))
    out.write_text(text)
    old = examples_digest([replace(r, label=None, group=None) for r in rows])
    assert old != examples_digest(rows)
    for digest, ok in ((old, True), (examples_digest(rows), True), (examples_digest(rows[:4]), False)):
        record_path(out).write_text(
            prediction_record(text, {"split": "axg", "examples_sha256": digest, "complete": True})
        )
        if ok:
            check_prediction_file(out, RTE, "axg", tmp_path)
        else:
            with pytest.raises(UserError, match="was predicted on other rows of axg"):
                check_prediction_file(out, RTE, "axg", tmp_path)
