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
STUDENT = {"task": "qqp", "model": "bert", "lr": 1e-4, "total_step": 20, "d_model": 32, "device_id": -1,
           "dataset": "teacher_bert_qqp"}


def eval_table(folder: Path, split: str, rows: list[tuple[int, float, float]], examples_per_s: float) -> None:
    """An evaluation table as run_fine_tune_eval.py writes it (fine_tune/evaluate.py run_eval)."""
    rows_ = [{"ckpt": c, "accuracy": a, "f1": f, "examples_per_s": examples_per_s} for c, a, f in rows]
    table = {"experiment": folder.name, "task": "qqp", "split": split, "num_rows": 48, "rows": rows_,
             "best": {m: {"ckpt": max(rows_, key=lambda r: (r[m], r["ckpt"]))["ckpt"],
                          "value": max(r[m] for r in rows_)} for m in ("accuracy", "f1")},
             "selection": "best on this split; ties go to the later checkpoint",
             "inference": {"examples_per_s": examples_per_s, "device": "cpu", "precision": "fp32", "batch_size": 128,
                           "note": "median over the checkpoints"}}
    (folder / f"eval-{split}.json").write_text(json.dumps(table))


def experiment(root: Path, folder: str, config: dict, evals: dict[str, list[tuple[int, float, float]]],
               params: dict[int, int], examples_per_s: float = 100.0) -> Path:
    d = root / folder
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(config))
    for split, rows in evals.items():
        eval_table(d, split, rows, examples_per_s)
    for step, n in params.items():
        torch.save({"w": torch.zeros(n)}, d / f"model-{step}.pt")
    return d


KD1 = "python3 run_fine_tune_distill.py --experiment kd_s1 --model bert --task qqp --dataset teacher_bert_qqp --seed 1"


@pytest.fixture()
def root(tmp_path) -> Path:
    root = tmp_path / "exp"
    experiment(root, "teacher_bert_qqp", {"task": "qqp", "model": "bert", "lr": 2e-5, "total_step": 20, "seed": 1,
                                          "experiment": "teacher", "dataset": "train",
                                          "provenance": {"command": "python3 run_fine_tune.py --experiment teacher"}},
               {"dev": [(5, 0.90, 0.88)]}, {5: 400}, examples_per_s=100.0)
    # two seeds of one student: best dev accuracy at 20 (seed 1) and at 10 (seed 2)
    # (seed 1 also saved checkpoint 30, never evaluated: the size columns are the chosen checkpoint's, not the latest)
    experiment(root, "kd_s1_bert_qqp", {**STUDENT, "experiment": "kd_s1", "seed": 1, "provenance": {"command": KD1}},
               {"train": [(10, 0.91, 0.90), (20, 0.95, 0.93)], "dev": [(10, 0.80, 0.70), (20, 0.84, 0.75)]},
               {10: 100, 20: 100, 30: 100}, examples_per_s=500.0)
    experiment(root, "kd_s2_bert_qqp", {**STUDENT, "experiment": "kd_s2", "seed": 2, "device_id": 0,
                                        "provenance": {"started": "2024-01-01"}},  # an older config: no command
               {"train": [(10, 0.97, 0.96), (20, 0.93, 0.92)], "dev": [(10, 0.86, 0.80), (20, 0.83, 0.79)]},
               {10: 100, 20: 100}, examples_per_s=700.0)
    # fewer parameters and faster, worse: on both fronts
    experiment(root, "small_bert_qqp", {**STUDENT, "experiment": "small", "seed": 1, "d_model": 16},
               {"dev": [(10, 0.75, 0.60)]}, {10: 50}, examples_per_s=900.0)
    # more parameters, slower and worse than kd: dominated in both panels
    experiment(root, "dominated_bert_qqp", {**STUDENT, "experiment": "dominated", "seed": 1, "d_model": 64},
               {"dev": [(10, 0.70, 0.65)]}, {10: 120}, examples_per_s=300.0)
    return root


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = [l for l in text.splitlines() if l.startswith("|")]
    header = lines[0].strip("|").split("|")
    return header, {c[0]: dict(zip(header, c)) for c in (l.strip("|").split("|") for l in lines[2:])}


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
    assert set(md) == set(csv_rows) == {r["group"] for r in data["rows"]} == {"kd (seeds 1,2)", "small", "dominated",
                                                                               "teacher"}
    assert data["splits"] == ["train", "dev"] and data["metrics"] == ["accuracy", "f1"]
    assert data["caption"] in out.read_text() and data["rule"]["kind"] == "best"
    assert data["columns"] == header
    expected = {  # the chosen rows' values, per row and split (best accuracy on the split itself)
        "kd (seeds 1,2)": {"train": ([20, 10], [0.95, 0.97], [0.93, 0.96]),
                           "dev": ([20, 10], [0.84, 0.86], [0.75, 0.80])},
        "small": {"dev": ([10], [0.75], [0.60])}, "dominated": {"dev": ([10], [0.70], [0.65])},
        "teacher": {"dev": ([5], [0.90], [0.88])}}
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
            assert md[g][f"{split} ckpt"] == (",".join(map(str, steps)) if steps else "—")
        assert number(c["members"]) == r["members"]
    kd = next(r for r in data["rows"] if r["group"] == "kd (seeds 1,2)")
    assert kd["members"] == ["kd_s1_bert_qqp", "kd_s2_bert_qqp"] and kd["seeds"] == [1, 2]
    # params and checkpoint bytes, the student's and its teacher's (the logits data set's source)
    size = kd["size"]
    assert (size["params"], size["teacher"], size["teacher_params"]) == (100, "teacher_bert_qqp", 400)
    assert size["bytes"] == (root / "kd_s1_bert_qqp" / "model-20.pt").stat().st_size
    assert size["teacher_bytes"] == (root / "teacher_bert_qqp" / "model-5.pt").stat().st_size
    assert md["kd (seeds 1,2)"]["params"] == "100 (400, 0.25×)"
    assert md["kd (seeds 1,2)"]["size"] == f"{size['bytes'] / 2**20:.1f} MiB ({size['teacher_bytes'] / 2**20:.1f} MiB)"
    c = csv_rows["kd (seeds 1,2)"]
    assert [number(c[k]) for k in ("params", "bytes", "teacher params", "teacher bytes", "size ckpt")] == \
        [100, size["bytes"], 400, size["teacher_bytes"], 20]
    # inference examples/s: the median over the seeds of the last reported split's table
    assert kd["inference"]["examples_per_s"] == 600.0 == number(c["infer examples/s"])
    assert md["kd (seeds 1,2)"]["infer ex/s"] == "600 (cpu)" and c["infer device"] == "cpu"
    # the varying hyper-parameters, as numbers
    assert header[header.index("infer ex/s") + 1:] == ["d_model", "dataset", "lr"]
    assert kd["hyper"] == {"d_model": 32, "dataset": "teacher_bert_qqp", "lr": 1e-4}
    assert number(c["lr"]) == 1e-4 and md["kd (seeds 1,2)"]["lr"] == "0.0001" and md["teacher"]["d_model"] == "—"
    assert c["d_model"] == "32" and csv_rows["teacher"]["d_model"] == ""
    assert [x["command"] for x in kd["commands"]] == [KD1, None] == number(c["commands"])
    assert next(r for r in data["rows"] if r["group"] == "teacher")["is_teacher"] and not kd["is_teacher"]
    assert "onnx ex/s" not in header and kd["onnx"] is None  # no export: no ONNX columns


def test_commands_printed(run, root):
    proc, out, _, _ = outputs(root, "--commands", run=run)
    text = proc.stdout[proc.stdout.index("Commands"):proc.stdout.index("(written to")]
    assert f"# row: kd (seeds 1,2)\n# run: kd_s1_bert_qqp\n{KD1}\n# run: kd_s2_bert_qqp: (not recorded)\n" in text
    assert "# run: small_bert_qqp: (not recorded)" in text
    assert "# run: teacher_bert_qqp\npython3 run_fine_tune.py --experiment teacher\n" in text
    assert text in out.read_text()  # the markdown file holds them too


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
        "small": (50, 0.75, None, 1), "dominated": (120, 0.70, None, 1), "teacher": (400, 0.90, None, 1)}
    assert {g: p["x"] for g, p in speed.items()} == {"kd (seeds 1,2)": 600.0, "small": 900.0, "dominated": 300.0,
                                                     "teacher": 100.0}
    assert {g for g, p in params.items() if p["is_teacher"]} == {"teacher"} == \
        {g for g, p in speed.items() if p["is_teacher"]}
    # the dominated row (more parameters, slower, worse than kd) is on neither front
    assert {g for g, p in params.items() if not p["on_front"]} == {"dominated"}
    assert data["panels"]["params"]["front"] == ["small", "kd (seeds 1,2)", "teacher"]  # by parameters
    assert data["panels"]["examples_per_s"]["front"] == ["teacher", "kd (seeds 1,2)", "small"]  # by examples/s
    assert "front by params: small, kd (seeds 1,2), teacher" in proc.stdout


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
    (d / "export.json").write_text(json.dumps({
        "format": "onnx", "checkpoint": f"model-{step}.pt",
        "onnx": {"examples_per_s": {"pytorch": torch_rate, "onnxruntime": ort, "onnxruntime_int8": int8},
                 "metrics": {"pytorch": {"accuracy": 0.84}, "onnx": {"accuracy": 0.84},
                             "int8": None if int8 is None else {"accuracy": 0.83}},
                 "rows": 48, "batch_size": 32, "threads": 1}}))
    os.utime(d / "export.json", (mtime, mtime))


def test_onnx_columns(run, root):
    # the newest export (by its record's time) is shown, though it is of the earlier checkpoint
    export(root / "kd_s1_bert_qqp", 10, 1200.0, 2100.0, 650.0, mtime=2e9)
    export(root / "kd_s1_bert_qqp", 20, 111.0, None, 222.0, mtime=1e9)  # older: not shown
    export(root / "small_bert_qqp", 10, 1500.0, None, 700.0, mtime=1e9)
    (root / "dominated_bert_qqp" / "hf-model-10").mkdir()  # a Hugging Face export: no ONNX numbers
    (root / "dominated_bert_qqp" / "hf-model-10" / "export.json").write_text(json.dumps({"checkpoint": "model-10.pt"}))
    _, out, csv_rows, data = outputs(root, run=run)
    header, md = parse_table(out.read_text())
    assert header[header.index("infer ex/s") + 1:header.index("infer ex/s") + 3] == ["onnx ex/s",
                                                                                      "torch ex/s (same run)"]
    assert (md["kd (seeds 1,2)"]["onnx ex/s"], md["kd (seeds 1,2)"]["torch ex/s (same run)"]) == ("1200 (int8 2100)",
                                                                                                  "650")
    assert (md["small"]["onnx ex/s"], md["small"]["torch ex/s (same run)"]) == ("1500", "700")
    assert md["dominated"]["onnx ex/s"] == md["teacher"]["torch ex/s (same run)"] == "—"
    kd = next(r for r in data["rows"] if r["group"] == "kd (seeds 1,2)")
    assert (kd["onnx"]["onnxruntime"], kd["onnx"]["onnxruntime_int8"], kd["onnx"]["pytorch"]) == (1200.0, 2100.0, 650.0)
    assert kd["onnx"]["export"] == "onnx-model-10/export.json" and kd["onnx"]["exports"] == 2
    assert (kd["onnx"]["checkpoint"], kd["onnx"]["step"]) == ("model-10.pt", 10)
    c = csv_rows["kd (seeds 1,2)"]
    assert [number(c[k]) for k in ("onnx examples/s", "onnx int8 examples/s", "torch examples/s (same run)")] == \
        [1200.0, 2100.0, 650.0]
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
    return (steps, [statistics.mean([r[s] for r in runs]) for s in steps], [min(r[s] for r in runs) for s in steps],
            [max(r[s] for r in runs) for s in steps])


def test_learning_curves(run, root):
    log = root / "log"
    # losses exact in float32 (TensorBoard's type) and their means exact too: the JSON is compared with ==
    loss1 = {2: 1.0, 4: 0.875, 6: 0.5}
    write_scalars(log / "kd_s1_bert_qqp", {LOSS: {2: 1.0, 4: 0.75}, "qqp/teacher_bert_qqp/bert/lr": {2: 1e-4},
                                           "qqp/dev/accuracy": {10: 0.80}}, walltime=1000)
    # the run resumed from step 2: it logs step 4 again (0.875 counts, written last) and goes on
    write_scalars(log / "kd_s1_bert_qqp", {LOSS: {4: 0.875, 6: 0.5}, "qqp/dev/accuracy": {20: 0.84}}, walltime=2000)
    loss2 = {2: 1.25, 4: 0.625, 6: 0.375, 8: 0.25}  # step 8: only this seed logged it
    write_scalars(log / "kd_s2_bert_qqp", {LOSS: loss2, "qqp/dev/accuracy": {10: 0.86, 15: 0.85, 20: 0.83},
                                           "qqp/dev/f1_score": {10: 0.8}}, walltime=1000)
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
    assert (small["steps"], small["loss_mean"], small["loss_low"], small["eval_steps"]) == ([2, 4], [2.0, 1.5],
                                                                                          [2.0, 1.5], [])


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def test_bad_inputs_write_nothing(run, root):
    def refused(*args: str) -> str:
        before = snapshot(root)
        proc = run("results_table.py", "--task", "qqp", "--exp_root", str(root), "--out", str(root / "t.md"), *args,
                   check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert snapshot(root) == before  # nothing written
        return proc.stderr.strip()

    assert refused("--curves", "x*") == f"error: --curves 'x*': no qqp experiment folder or name in {root} matches it"
    assert refused("--curves", ",") == "error: --curves ',': name at least one experiment folder or name (globs, " \
                                      "comma-separated)"
    assert refused("--curves", "dominated") == (
        f"error: --curves: dominated_bert_qqp has no TensorBoard scalars in its log folder "
        f"{root / 'log' / 'dominated_bert_qqp'} (no event file)")
    # small was evaluated on dev only: with train reported last, no row has a point to draw
    assert refused("--experiments", "small", "--splits", "dev,train", "--plot") == (
        "error: --plot: no row has a train accuracy together with a checkpoint to count parameters or an inference "
        "examples/s; nothing to plot")
    (root / "kd_s1_bert_qqp" / "onnx-model-20").mkdir()
    (root / "kd_s1_bert_qqp" / "onnx-model-20" / "export.json").write_text(json.dumps({"format": "onnx", "onnx": {}}))
    assert refused() == (f"error: {root / 'kd_s1_bert_qqp' / 'onnx-model-20' / 'export.json'}: not an ONNX export "
                         f"record written by export_model.py --format onnx (no onnx.examples_per_s with numbers for "
                         f"onnxruntime and pytorch)")
    (root / "kd_s1_bert_qqp" / "onnx-model-20" / "export.json").unlink()
    (root / "t.csv").mkdir()
    assert refused() == (f"error: --out {root / 't.md'}: {root / 't.csv'} is a folder (--out names the markdown "
                         f"file; the files beside it would be written there)")
