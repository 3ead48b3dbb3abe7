"""results_table.py's outputs as data and pictures: the CSV and JSON beside the markdown, --commands, the Pareto
plot (--plot), the ONNX columns and the learning curves (--curves).

The experiment root is built by hand: config.json, eval-{split}.json tables in run_fine_tune_eval.py's format with
known metrics, tiny model-{step}.pt state dicts with a known number of parameters, export.json records of ONNX
exports, and TensorBoard event files written here with known values (a resumed run logging a step twice among
them). Every expected number is computed in this file from those inputs; the markdown is parsed and compared
with the CSV and JSON, and the pictures are checked through the JSON written with them (plus a PNG check).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest
import torch

PNG = b"\x89PNG\r\n\x1a\n"
LOSS = "qqp/teacher_bert_qqp/bert/loss"  # {task}/{dataset}/{model}/loss: the trainer's tag
STUDENT = {
    "task": "qqp",
    "model": "bert",
    "lr": 1e-4,
    "total_step": 20,
    "d_model": 32,
    "device_id": -1,
    "dataset": "teacher_bert_qqp",
}


def eval_table(folder: Path, split: str, rows: list[tuple[int, float, float]], examples_per_s: float) -> None:
    """An evaluation table as run_fine_tune_eval.py writes it (fine_tune/evaluate.py run_eval)."""
    rows_ = [{"ckpt": c, "accuracy": a, "f1": f, "examples_per_s": examples_per_s} for c, a, f in rows]
    table = {
        "experiment": folder.name,
        "task": "qqp",
        "split": split,
        "num_rows": 48,
        "rows": rows_,
        "best": {
            m: {"ckpt": max(rows_, key=lambda r: (r[m], r["ckpt"]))["ckpt"], "value": max(r[m] for r in rows_)}
            for m in ("accuracy", "f1")
        },
        "selection": "best on this split; ties go to the later checkpoint",
        "inference": {
            "examples_per_s": examples_per_s,
            "device": "cpu",
            "precision": "fp32",
            "batch_size": 128,
            "note": "median over the checkpoints",
        },
    }
    (folder / f"eval-{split}.json").write_text(json.dumps(table))


def experiment(
    root: Path,
    folder: str,
    config: dict,
    evals: dict[str, list[tuple[int, float, float]]],
    params: dict[int, int],
    examples_per_s: float = 100.0,
) -> Path:
    d = root / folder
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    for split, rows in evals.items():
        eval_table(d, split, rows, examples_per_s)
    for step, n in params.items():
        torch.save({"w": torch.zeros(n)}, d / f"model-{step}.pt")
    return d


SPEED = "ex/s (PyTorch, evaluation, cpu, fp32, batch 128)"  # every row's evaluation: one device, precision, batch
DEFAULT_HEADER = [
    "experiment",
    "method",
    "model",
    "teacher",
    "train acc",
    "train F1",
    "train ckpt (best)",
    "dev acc",
    "dev F1",
    "dev ckpt (best)",
    "params",
    "params ÷ teacher",
    SPEED,
    "differs",
]
KD1 = "python3 run_fine_tune_distill.py --experiment kd_s1 --model bert --task qqp --dataset teacher_bert_qqp --seed 1"


@pytest.fixture()
def root(tmp_path) -> Path:
    root = tmp_path / "exp"
    experiment(
        root,
        "teacher_bert_qqp",
        {
            "task": "qqp",
            "model": "bert",
            "lr": 2e-5,
            "total_step": 20,
            "seed": 1,
            "experiment": "teacher",
            "dataset": "train",
            "provenance": {"command": "python3 run_fine_tune.py --experiment teacher"},
        },
        {"dev": [(5, 0.90, 0.88)]},
        {5: 400},
        examples_per_s=100.0,
    )
    # two seeds of one student: best dev accuracy at 20 (seed 1) and at 10 (seed 2)
    # (seed 1 also saved checkpoint 30, never evaluated: the size columns are the chosen checkpoint's, not the latest)
    experiment(
        root,
        "kd_s1_bert_qqp",
        {**STUDENT, "experiment": "kd_s1", "seed": 1, "provenance": {"command": KD1}},
        {"train": [(10, 0.91, 0.90), (20, 0.95, 0.93)], "dev": [(10, 0.80, 0.70), (20, 0.84, 0.75)]},
        {10: 100, 20: 100, 30: 100},
        examples_per_s=500.0,
    )
    experiment(
        root,
        "kd_s2_bert_qqp",
        {
            **STUDENT,
            "experiment": "kd_s2",
            "seed": 2,
            "device_id": 0,
            "provenance": {"started": "2024-01-01"},
        },  # an older config: no command
        {"train": [(10, 0.97, 0.96), (20, 0.93, 0.92)], "dev": [(10, 0.86, 0.80), (20, 0.83, 0.79)]},
        {10: 100, 20: 100},
        examples_per_s=700.0,
    )
    # fewer parameters and faster, worse: on both fronts
    experiment(
        root,
        "small_bert_qqp",
        {**STUDENT, "experiment": "small", "seed": 1, "d_model": 16},
        {"dev": [(10, 0.75, 0.60)]},
        {10: 50},
        examples_per_s=900.0,
    )
    # more parameters, slower and worse than kd: dominated in both panels
    experiment(
        root,
        "dominated_bert_qqp",
        {**STUDENT, "experiment": "dominated", "seed": 1, "d_model": 64},
        {"dev": [(10, 0.70, 0.65)]},
        {10: 120},
        examples_per_s=300.0,
    )
    return root


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = [row for row in text.splitlines() if row.startswith("|")]
    header = lines[0].strip("|").split("|")
    return header, {c[0]: dict(zip(header, c)) for c in (row.strip("|").split("|") for row in lines[2:])}


def cell(values: list[float]) -> str:
    """The markdown cell of a metric, computed here from the per-seed values."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


def number(text: str):
    return None if text == "" else json.loads(text)


def outputs(root: Path, *args: str, run) -> tuple:
    out = root / "t.md"
    proc = run("results_table.py", "--task", "qqp", "--exp_root", str(root), "--out", str(out), *args)
    with open(root / "t.csv", newline="") as f:
        rows = {r["group"]: r for r in csv.DictReader(f)}
    return proc, out, rows, json.loads((root / "t.json").read_text())


def test_csv_and_json_hold_the_markdown_numbers(run, root):
    proc, out, csv_rows, data = outputs(root, run=run)
    header, md = parse_table(out.read_text())
    assert out.read_text() in proc.stdout and "t.csv" in proc.stdout
    assert (
        set(md)
        == set(csv_rows)
        == {r["group"] for r in data["rows"]}
        == {"kd (seeds 1,2)", "small", "dominated", "teacher"}
    )
    assert data["splits"] == ["train", "dev"] and data["metrics"] == ["accuracy", "f1"]
    assert data["caption"] in out.read_text() and data["rule"]["kind"] == "best"
    assert data["columns"] == header
    expected = {  # the chosen rows' values, per row and split (best accuracy on the split itself)
        "kd (seeds 1,2)": {
            "train": ([20, 10], [0.95, 0.97], [0.93, 0.96]),
            "dev": ([20, 10], [0.84, 0.86], [0.75, 0.80]),
        },
        "small": {"dev": ([10], [0.75], [0.60])},
        "dominated": {"dev": ([10], [0.70], [0.65])},
        "teacher": {"dev": ([5], [0.90], [0.88])},
    }
    for r in data["rows"]:
        g, c = r["group"], csv_rows[r["group"]]
        for split in ("train", "dev"):
            steps, acc, f1 = expected[g].get(split, ([], [], []))
            s = r["splits"][split]
            assert s["ckpt"] == steps and number(c[f"{split} ckpt"]) == steps
            for metric, values, short in (("accuracy", acc, "acc"), ("f1", f1, "F1")):
                st = s["metrics"][metric]
                assert st["values"] == values and st["n"] == len(values)
                assert st["mean"] == (statistics.mean(values) if values else None)
                assert st["std"] == (statistics.stdev(values) if len(values) > 1 else None)
                for key in ("mean", "std", "n", "values"):  # the CSV holds the same numbers, exactly
                    assert number(c[f"{split} {metric} {key}"]) == (st[key] if st[key] != [] else [])
                assert md[g][f"{split} {short}"] == (cell(values) if values else "—")
            assert md[g][f"{split} ckpt (best)"] == (",".join(map(str, steps)) if steps else "—")
        assert number(c["members"]) == r["members"]
    kd = next(r for r in data["rows"] if r["group"] == "kd (seeds 1,2)")
    assert kd["members"] == ["kd_s1_bert_qqp", "kd_s2_bert_qqp"] and kd["seeds"] == [1, 2]
    # params and checkpoint bytes, the student's and its teacher's (the logits data set's source)
    size = kd["size"]
    assert (size["params"], size["teacher"], size["teacher_params"]) == (100, "teacher_bert_qqp", 400)
    assert size["bytes"] == (root / "kd_s1_bert_qqp" / "model-20.pt").stat().st_size
    assert size["teacher_bytes"] == (root / "teacher_bert_qqp" / "model-5.pt").stat().st_size
    assert (md["kd (seeds 1,2)"]["params"], md["kd (seeds 1,2)"]["params ÷ teacher"]) == ("100", "0.25×")
    assert (md["teacher"]["params"], md["teacher"]["params ÷ teacher"]) == ("400", "—")
    c = csv_rows["kd (seeds 1,2)"]
    assert [number(c[k]) for k in ("params", "bytes", "teacher params", "teacher bytes", "size ckpt")] == [
        100,
        size["bytes"],
        400,
        size["teacher_bytes"],
        20,
    ]
    # inference examples/s: the median over the seeds of the last reported split's table
    assert kd["inference"]["examples_per_s"] == 600.0 == number(c["infer examples/s"])
    assert md["kd (seeds 1,2)"][SPEED] == "600" and c["infer device"] == "cpu"  # cpu, fp32, batch 128: the header's
    assert (c["infer precision"], c["infer batch size"]) == ("fp32", "128")
    # the varying hyper-parameters: in the CSV and JSON as numbers, each field; in the markdown the student's width
    # in its model, the logits set in its teacher (the split the logits were computed on is train, as the
    # teacher's), the others in differs
    assert kd["hyper"] == {"d_model": 32, "dataset": "teacher_bert_qqp", "lr": 1e-4}
    assert [md[g]["model"] for g in ("kd (seeds 1,2)", "small", "teacher")] == ["bert H32", "bert H16", "bert"]
    assert [md[g]["teacher"] for g in ("kd (seeds 1,2)", "teacher")] == ["teacher_bert_qqp", "—"]
    assert [md[g]["method"] for g in ("kd (seeds 1,2)", "teacher")] == ["KD", "fine-tune"]
    assert md["kd (seeds 1,2)"]["differs"] == "lr=0.0001" and md["teacher"]["differs"] == "lr=2e-05"
    assert number(c["lr"]) == 1e-4 and c["d_model"] == "32" and csv_rows["teacher"]["d_model"] == ""
    assert header == DEFAULT_HEADER
    assert [x["command"] for x in kd["commands"]] == [KD1, None] == number(c["commands"])
    assert next(r for r in data["rows"] if r["group"] == "teacher")["is_teacher"] and not kd["is_teacher"]
    assert kd["onnx"] is None and "ONNX" not in out.read_text()  # no export: no ONNX column, no note


def test_commands_printed(run, root):
    proc, out, _, _ = outputs(root, "--commands", run=run)
    text = proc.stdout[proc.stdout.index("Commands") : proc.stdout.index("(written to")]
    assert f"# row: kd (seeds 1,2)\n# run: kd_s1_bert_qqp\n{KD1}\n# run: kd_s2_bert_qqp: (not recorded)\n" in text
    assert "# run: small_bert_qqp: (not recorded)" in text
    assert "# run: teacher_bert_qqp\npython3 run_fine_tune.py --experiment teacher\n" in text
    assert text in out.read_text()  # the markdown file holds them too


def test_markdown_columns_short_paths_one_missing_mark_no_pairs(run, root, data_root, tmp_path):
    import re

    from fine_tune.result_columns import COVERED

    elsewhere = tmp_path / "elsewhere"  # pretrained students outside both roots, of one name
    # a layer-wise student: its teacher named by five fields (teacher_exp, tmodel, tckpt, teacher_experiment,
    # teacher_checkpoint); a KD student recording its logits set's teacher and split; an F1 that is not a number
    experiment(
        root,
        "lw_bert_qqp",
        {
            **STUDENT,
            "experiment": "lw",
            "seed": 1,
            "method": "lad",
            "dataset": "train",
            "teacher_exp": "teacher",
            "tmodel": "bert",
            "tckpt": 5,
            "teacher_layers": 12,
            "teacher_experiment": "teacher_bert_qqp",
            "hidden_mapping": "S1<-A2, S2<-A4",
            "teacher_checkpoint": "teacher_bert_qqp/model-5.pt",
            "num_hidden_layers": 6,
            "ptrain_ver": str(data_root / "models" / "tiny"),
            "max_examples": 8,
            "student_ptrain_ver": str(elsewhere / "a" / "mini"),
        },
        {"dev": [(10, 0.82, float("nan"))]},
        {10: 200},
        examples_per_s=400.0,
    )
    experiment(
        root,
        "kd2_bert_qqp",
        {
            **STUDENT,
            "experiment": "kd2",
            "seed": 1,
            "lr": 3e-4,
            "teacher_experiment": "teacher_bert_qqp",
            "teacher_checkpoint": 5,
            "logits_split": "train",
            "student_ptrain_ver": str(elsewhere / "b" / "mini"),
            "max_examples": None,
        },
        {"dev": [(10, 0.81, 0.70)]},
        {10: 100},
        examples_per_s=650.0,
    )
    _, out, csv_rows, data = outputs(root, run=run)
    text = out.read_text()
    header, md = parse_table(text)
    assert header == DEFAULT_HEADER == data["columns"] and len(data["column_names"]) == len(header)
    cells = [c for r in md.values() for c in r.values()]
    assert str(tmp_path) not in text and not any(w.startswith("/") for c in cells for w in c.split())
    assert all(cells) and not re.search(r"\b(None|nan|NaN)\b", text)
    lw, kd2 = md["lw"], md["kd2"]
    assert (lw["method"], lw["model"], lw["teacher"]) == (
        "lad",
        "bert L6 H32 from …/a/mini",
        "teacher_bert_qqp/model-5.pt",
    )
    assert (kd2["method"], kd2["model"], kd2["teacher"]) == (
        "KD",
        "bert H32 from …/b/mini",
        "teacher_bert_qqp/model-5.pt",
    )
    assert (lw["dev acc"], lw["dev F1"], lw["params ÷ teacher"]) == ("0.8200", "—", "0.50×")
    # no pair saying one thing twice: the teacher once per row, no covered field in differs
    assert [c for c in lw.values() if "teacher_bert_qqp" in c] == [lw["teacher"]]
    assert not any(f"{f}=" in r["differs"] for r in md.values() for f in COVERED)
    assert (lw["differs"], kd2["differs"]) == ("lr=0.0001, max_examples=8", "lr=0.0003, max_examples=—")
    # the CSV and JSON keep every field as recorded
    lw_data = next(r for r in data["rows"] if r["group"] == "lw")
    assert (
        lw_data["hyper"]["student_ptrain_ver"] == str(elsewhere / "a" / "mini") == csv_rows["lw"]["student_ptrain_ver"]
    )
    assert (csv_rows["lw"]["teacher_checkpoint"], csv_rows["kd2"]["teacher_checkpoint"]) == (
        "teacher_bert_qqp/model-5.pt",
        "5",
    )
    assert lw_data["splits"]["dev"]["metrics"]["f1"]["n"] == 1 and csv_rows["lw"]["dev f1 values"] == "[NaN]"

    # --columns: these, in this order (a split: its metrics and checkpoint; default: the rest of the default set;
    # a name given twice: once), paths under the data root relative to it
    names = "dev,experiment,ptrain_ver,tckpt,size,default,dev.f1"
    _, out, _, data = outputs(root, "--columns", names, run=run)
    header, md = parse_table(out.read_text())
    md = {r["experiment"]: r for r in md.values()}
    assert header[:7] == ["dev acc", "dev F1", "dev ckpt (best)", "experiment", "ptrain_ver", "tckpt", "size"]
    assert header[7:] == [h for h in DEFAULT_HEADER if h not in header[:7]] and len(set(header)) == len(header)
    assert data["column_names"][:7] == [
        "dev.accuracy",
        "dev.f1",
        "dev.ckpt",
        "experiment",
        "ptrain_ver",
        "tckpt",
        "size",
    ]
    assert (md["lw"]["ptrain_ver"], md["lw"]["tckpt"], md["kd2"]["tckpt"]) == ("models/tiny", "5", "—")
    assert md["lw"]["size"] == f"{(root / 'lw_bert_qqp' / 'model-10.pt').stat().st_size / 2**20:.1f} MiB"
    # --columns list: every name, nothing written
    before = out.read_bytes()
    proc = run("results_table.py", "--task", "qqp", "--exp_root", str(root), "--out", str(out), "--columns", "list")
    assert "  speed: PyTorch examples/s of the evaluation" in proc.stdout and "tckpt" in proc.stdout
    assert "  dev: dev.accuracy, dev.f1, dev.ckpt" in proc.stdout and out.read_bytes() == before


def png_ok(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == PNG
    with Image.open(path) as im:
        im.verify()


def test_pareto_plot_data(run, root):
    proc, _, _, _ = outputs(root, "--plot", run=run)
    png_ok(root / "t-pareto.png")
    data = json.loads((root / "t-pareto.json").read_text())
    assert (data["split"], data["metric"]) == ("dev", "accuracy")
    params = {p["group"]: p for p in data["panels"]["params"]["points"]}
    speed = {p["group"]: p for p in data["panels"]["examples_per_s"]["points"]}
    kd = params["kd (seeds 1,2)"]
    assert kd["members"] == ["kd_s1_bert_qqp", "kd_s2_bert_qqp"] and kd["n"] == 2 and kd["x"] == 100
    assert kd["y_mean"] == statistics.mean([0.84, 0.86]) and kd["y_std"] == statistics.stdev([0.84, 0.86])
    assert {g: (p["x"], p["y_mean"], p["y_std"], p["n"]) for g, p in params.items() if g != "kd (seeds 1,2)"} == {
        "small": (50, 0.75, None, 1),
        "dominated": (120, 0.70, None, 1),
        "teacher": (400, 0.90, None, 1),
    }
    assert {g: p["x"] for g, p in speed.items()} == {
        "kd (seeds 1,2)": 600.0,
        "small": 900.0,
        "dominated": 300.0,
        "teacher": 100.0,
    }
    assert (
        {g for g, p in params.items() if p["is_teacher"]}
        == {"teacher"}
        == {g for g, p in speed.items() if p["is_teacher"]}
    )
    # the dominated row (more parameters, slower, worse than kd) is on neither front
    assert {g for g, p in params.items() if not p["on_front"]} == {"dominated"}
    assert data["panels"]["params"]["front"] == ["small", "kd (seeds 1,2)", "teacher"]  # by parameters
    assert data["panels"]["examples_per_s"]["front"] == ["teacher", "kd (seeds 1,2)", "small"]  # by examples/s
    assert "front by params: small, kd (seeds 1,2), teacher" in proc.stdout


def test_pareto_labels_of_tied_and_near_points_do_not_overlap(tmp_path):
    """Points drawn at one place share one label; labels of points a few pixels apart are moved apart: no two
    labels' boxes (matplotlib's renderer, Agg) overlap."""
    from fine_tune.result_plots import pareto_figure

    def point(group, x, y, teacher=False):
        return {
            "group": group,
            "members": [group],
            "x": x,
            "y_mean": y,
            "y_std": None,
            "n": 1,
            "is_teacher": teacher,
            "on_front": False,
        }

    points = [
        point("tie_a", 100, 0.80),
        point("far", 400, 0.90, True),
        point("tie_b", 100, 0.80),
        point("near", 101, 0.8005),
        point("nearer", 100.5, 0.8002),
    ]
    data = {
        "task": "qqp",
        "split": "dev",
        "metric": "accuracy",
        "rule": "best",
        "error_bars": "std",
        "panels": {
            key: {"x_label": key, "x_better": "lower", "x_scale": scale, "points": points, "front": []}
            for key, scale in (("params", "log"), ("examples_per_s", "linear"))
        },
    }
    fig = pareto_figure(data)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = {t.get_text(): t.get_window_extent(renderer) for t in ax.texts}
        assert sorted(labels) == ["far (teacher)", "near", "nearer", "tie_a, tie_b"]
        boxes = list(labels.values())
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]), labels


def test_pareto_front_hand_made():
    from fine_tune.result_plots import pareto_front

    # (params, metric): b dominated by a (fewer params, better); c ties a's metric with more params: dominated;
    # d equals a exactly: neither dominates the other; e is the best metric: on the front
    points = [(10, 0.8), (20, 0.7), (30, 0.8), (10, 0.8), (50, 0.9)]
    assert pareto_front(points, lower_x=True) == [True, False, False, True, True]
    # examples/s (higher is better)
    assert pareto_front([(100, 0.9), (300, 0.8), (200, 0.8), (300, 0.85)], lower_x=False) == [True, False, False, True]


def export(folder: Path, step: int, ort: float, int8: float | None, torch_rate: float, mtime: float) -> None:
    d = folder / f"onnx-model-{step}"
    d.mkdir()
    (d / "export.json").write_text(
        json.dumps(
            {
                "format": "onnx",
                "checkpoint": f"model-{step}.pt",
                "onnx": {
                    "examples_per_s": {"pytorch": torch_rate, "onnxruntime": ort, "onnxruntime_int8": int8},
                    "metrics": {
                        "pytorch": {"accuracy": 0.84},
                        "onnx": {"accuracy": 0.84},
                        "int8": None if int8 is None else {"accuracy": 0.83},
                    },
                    "rows": 48,
                    "batch_size": 32,
                    "threads": 1,
                },
            }
        )
    )
    os.utime(d / "export.json", (mtime, mtime))


def test_onnx_columns(run, root):
    # the newest export (by its record's time) is shown, though it is of the earlier checkpoint
    export(root / "kd_s1_bert_qqp", 10, 1200.0, 2100.0, 650.0, mtime=2e9)
    export(root / "kd_s1_bert_qqp", 20, 111.0, None, 222.0, mtime=1e9)  # older: not shown
    export(root / "small_bert_qqp", 10, 1500.0, None, 700.0, mtime=1e9)
    (root / "dominated_bert_qqp" / "hf-model-10").mkdir()  # a Hugging Face export: no ONNX numbers
    (root / "dominated_bert_qqp" / "hf-model-10" / "export.json").write_text(json.dumps({"checkpoint": "model-10.pt"}))
    # two speeds of one row: PyTorch's of the evaluation, and PyTorch's and ONNX Runtime's of the export's check
    # (its own batch size and threads): the markdown shows one PyTorch speed, the evaluation's, its header saying so
    _, out, csv_rows, data = outputs(root, run=run)
    header, md = parse_table(out.read_text())
    assert header == DEFAULT_HEADER and [h for h in header if "ex/s" in h or "PyTorch" in h] == [SPEED]
    assert md["kd (seeds 1,2)"][SPEED] == "600" and not any("650" in c.split() for c in md["kd (seeds 1,2)"].values())
    assert (
        "- note: ONNX exports of kd (seeds 1,2), small: --columns default,onnx,onnx_speedup shows their ONNX "
        "Runtime examples/s"
    ) in out.read_text().splitlines()
    # asked for: ONNX Runtime's examples/s and their ratio to PyTorch's in the same check, never that PyTorch speed
    names = ["experiment", "speed", "onnx", "onnx_int8", "onnx_speedup"]
    _, out, csv_rows, data = outputs(root, "--columns", ",".join(names), run=run)
    header, md = parse_table(out.read_text())
    assert data["column_names"] == names and header == data["columns"] == [
        "experiment",
        SPEED,
        "ex/s (ONNX Runtime fp32, export check, 1 thread, batch 32)",
        "ex/s (ONNX Runtime int8, export check, 1 thread, batch 32)",
        "ONNX Runtime ÷ PyTorch (same export check)",
    ]
    assert [h for h in header if "PyTorch," in h] == [SPEED]
    assert list(md["kd (seeds 1,2)"].values())[2:] == ["1200", "2100", f"{1200 / 650:.2f}× (int8 {2100 / 650:.2f}×)"]
    assert list(md["small"].values())[2:] == ["1500", "—", f"{1500 / 700:.2f}×"]
    assert list(md["dominated"].values())[2:] == list(md["teacher"].values())[2:] == ["—"] * 3
    kd = next(r for r in data["rows"] if r["group"] == "kd (seeds 1,2)")
    assert (kd["onnx"]["onnxruntime"], kd["onnx"]["onnxruntime_int8"], kd["onnx"]["pytorch"]) == (1200.0, 2100.0, 650.0)
    assert kd["onnx"]["export"] == "onnx-model-10/export.json" and kd["onnx"]["exports"] == 2
    assert (kd["onnx"]["checkpoint"], kd["onnx"]["step"]) == ("model-10.pt", 10)
    c = csv_rows["kd (seeds 1,2)"]  # the CSV keeps every speed
    assert [
        number(c[k])
        for k in ("infer examples/s", "onnx examples/s", "onnx int8 examples/s", "onnx export torch examples/s")
    ] == [600.0, 1200.0, 2100.0, 650.0]
    assert csv_rows["small"]["onnx int8 examples/s"] == "" and "ONNX Runtime" in data["caption"]


def write_scalars(log_dir: Path, series: dict[str, dict[int, float]], walltime: float) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    for tag, values in series.items():
        for step, v in values.items():
            writer.add_scalar(tag, v, step, walltime=walltime + step)
    writer.close()


def band(runs: list[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    steps = sorted(set.intersection(*(set(r) for r in runs)))
    return (
        steps,
        [statistics.mean([r[s] for r in runs]) for s in steps],
        [min(r[s] for r in runs) for s in steps],
        [max(r[s] for r in runs) for s in steps],
    )


def test_learning_curves(run, root):
    log = root / "log"
    # losses exact in float32 (TensorBoard's type) and their means exact too: the JSON is compared with ==
    loss1 = {2: 1.0, 4: 0.875, 6: 0.5}
    write_scalars(
        log / "kd_s1_bert_qqp",
        {LOSS: {2: 1.0, 4: 0.75}, "qqp/teacher_bert_qqp/bert/lr": {2: 1e-4}, "qqp/dev/accuracy": {10: 0.80}},
        walltime=1000,
    )
    # the run resumed from step 2: it logs step 4 again (0.875 counts, written last) and goes on
    write_scalars(log / "kd_s1_bert_qqp", {LOSS: {4: 0.875, 6: 0.5}, "qqp/dev/accuracy": {20: 0.84}}, walltime=2000)
    loss2 = {2: 1.25, 4: 0.625, 6: 0.375, 8: 0.25}  # step 8: only this seed logged it
    write_scalars(
        log / "kd_s2_bert_qqp",
        {LOSS: loss2, "qqp/dev/accuracy": {10: 0.86, 15: 0.85, 20: 0.83}, "qqp/dev/f1_score": {10: 0.8}},
        walltime=1000,
    )
    write_scalars(log / "small_bert_qqp", {LOSS: {2: 2.0, 4: 1.5}}, walltime=1000)  # no evaluation logged
    _, _, _, _ = outputs(root, "--curves", "kd_s*,small", run=run)
    png_ok(root / "t-curves.png")
    data = json.loads((root / "t-curves.json").read_text())
    assert (data["split"], data["metric"]) == ("dev", "accuracy") and "min-max" in data["band"]
    groups = {g["group"]: g for g in data["groups"]}
    assert set(groups) == {"kd (seeds 1,2)", "small"}
    kd = groups["kd (seeds 1,2)"]
    assert kd["members"] == ["kd_s1_bert_qqp", "kd_s2_bert_qqp"] and kd["loss_tags"] == [LOSS, LOSS]
    steps, mean, low, high = band([loss1, loss2])
    assert (kd["steps"], kd["loss_mean"], kd["loss_low"], kd["loss_high"]) == (steps, mean, low, high) != ([],) * 4
    assert kd["steps"] == [2, 4, 6]
    esteps, emean, elow, ehigh = band([{10: 0.80, 20: 0.84}, {10: 0.86, 15: 0.85, 20: 0.83}])
    assert kd["metric_tag"] == "qqp/dev/accuracy" and kd["eval_steps"] == esteps == [10, 20]
    for got, want in ((kd["metric_mean"], emean), (kd["metric_low"], elow), (kd["metric_high"], ehigh)):
        assert got == pytest.approx(want, abs=1e-7)  # TensorBoard stores float32
    small = groups["small"]
    assert (small["steps"], small["loss_mean"], small["loss_low"], small["eval_steps"]) == (
        [2, 4],
        [2.0, 1.5],
        [2.0, 1.5],
        [],
    )


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_bad_inputs_write_nothing(run, root):
    def refused(*args: str) -> str:
        before = snapshot(root)
        proc = run(
            "results_table.py",
            "--task",
            "qqp",
            "--exp_root",
            str(root),
            "--out",
            str(root / "t.md"),
            *args,
            check=False,
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert snapshot(root) == before  # nothing written
        return proc.stderr.strip()

    assert refused("--curves", "x*") == f"error: --curves 'x*': no qqp experiment folder or name in {root} matches it"
    assert (
        refused("--curves", ",") == "error: --curves ',': name at least one experiment folder or name (globs, "
        "comma-separated)"
    )
    assert refused("--curves", "dominated") == (
        f"error: --curves: dominated_bert_qqp has no TensorBoard scalars in its log folder "
        f"{root / 'log' / 'dominated_bert_qqp'} (no event file)"
    )
    # small was evaluated on dev only: with train reported last, no row has a point to draw
    assert refused("--experiments", "small", "--splits", "dev,train", "--plot") == (
        "error: --plot: no row has a train accuracy together with a checkpoint to count parameters or an inference "
        "examples/s; nothing to plot"
    )
    (root / "kd_s1_bert_qqp" / "onnx-model-20").mkdir()
    (root / "kd_s1_bert_qqp" / "onnx-model-20" / "export.json").write_text(json.dumps({"format": "onnx", "onnx": {}}))
    assert refused() == (
        f"error: {root / 'kd_s1_bert_qqp' / 'onnx-model-20' / 'export.json'}: not an ONNX export "
        f"record written by export_model.py --format onnx (no onnx.examples_per_s with numbers for "
        f"onnxruntime and pytorch)"
    )
    (root / "kd_s1_bert_qqp" / "onnx-model-20" / "export.json").unlink()
    (root / "t.csv").mkdir()
    assert refused() == (
        f"error: --out {root / 't.md'}: {root / 't.csv'} is a folder (--out names the markdown "
        f"file; the files beside it would be written there)"
    )
