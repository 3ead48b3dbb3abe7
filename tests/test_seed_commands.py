"""The commands of the maintained task documents (doc/fine_tune_boolq.md, doc/fine_tune_qqp.md), parsed from
the documents themselves and run in document order, get the outcomes of the documents' "Seed commands:
expected outcome" tables, parsed from the documents too (tests/doc_commands.py): one row per command, in
order, with its script, --experiment, --dataset and outcome, and (QQP) the files each run leaves at a
checkpoint. Only the mapping from the tables' outcome wording to the checks is written here.

Rewrites are limited to what tests/doc_commands.py allows: --ptrain_ver (a tiny local model), step counts,
checkpoint numbers and --max_seq_len. Every other flag runs with the document's value (the test checks the
recorded config.json). The outcome table is the one for a CPU-only machine: the scripts run in this process
and ``torch.cuda.is_available`` is patched to False, so the test means the same on a GPU machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import HANG_GUARD, REPO, SHARED
from doc_commands import NONE_CELLS, OUTCOME_HEADING, REWRITABLE, Command, parse_commands, parse_outcome_table, rewrite

STOP = OUTCOME_HEADING  # where the maintained documents' own additions begin
LAYER_WISE = (
    "run_lad_distil.py",
    "run_lad_no_distil.py",
    "run_probing_lad.py",
    "run_alp_distil.py",
    "run_pkd_distill.py",
)
SHRINK = dict(total_step=6, warmup_step=1, ckpt_step=3, log_step=3, max_seq_len=32)
CKPTS = ["model-3.pt", "model-6.pt"]  # what a shrunken fine-tune leaves

# Outcome kinds, and the wording of the tables' "outcome" column for each.
RUNS, NO_FOLDER, NO_LOGITS, NO_CKPT, BAD_SPLIT = "runs", "missing folder", "missing logits", "no ckpt", "bad split"
OUTCOMES = {
    "runs": RUNS,
    "error: missing experiment folder": NO_FOLDER,
    "error: missing logits data set": NO_LOGITS,
    "error: missing checkpoint": NO_CKPT,
    "error: not a split of the task": BAD_SPLIT,
}
FILES_COLUMN = "files at each checkpoint"  # the QQP table's column of what a run leaves per checkpoint
TINY_WIDTHS = dict(d_model=32, d_ff=64, num_attention_heads=2)  # the tiny teacher's (synthetic.write_tiny_model)


@pytest.fixture()
def cpu_only(monkeypatch):
    """The tables' CPU-only machine (in-process scripts), one torch thread (tiny models; no oversubscription)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seed_commands(name: str) -> list[Command] | None:
    seed = SHARED / "seeds" / name
    return parse_commands(seed) if seed.is_file() else None


def doc_commands(name: str) -> list[Command]:
    """The seed commands of a maintained document: every python command before its own additions, except the
    one-command download alternative. They must be the original document's commands, in order, with the same
    script, flags and values; only the interpreter became ``python``."""
    path = REPO / "doc" / name
    all_commands = parse_commands(path, STOP)
    downloads = [c for c in all_commands if c.script == "download_data.py"]
    assert len(downloads) == 1 and downloads[0].section == "Get Data", downloads
    commands = [c for c in all_commands if c.script != "download_data.py"]
    assert {c.interpreter for c in commands} == {"python"}
    original = seed_commands(name)
    if original is not None:  # ../shared is beside the development checkout
        assert len(commands) == len(original), "the maintained document dropped or added a seed command"
        for new, old in zip(commands, original):
            assert new.argv == old.argv, f"{new} differs from the original {old}"
            assert new.section.startswith(old.section), (new.section, old.section)
    return commands


def expected_outcomes(name: str, commands: list[Command]) -> list[tuple[str, dict[str, str]]]:
    """The outcome kind (and all cells) of each command, from the document's "Seed commands: expected outcome"
    table: one row per command, numbered 1.., in document order, with the command's script, --experiment and
    --dataset ("—" where the command has none), and an outcome wording of :data:`OUTCOMES`."""
    rows = parse_outcome_table(REPO / "doc" / name)
    assert [r.number for r in rows] == list(range(1, len(rows) + 1)), f"{name}: rows not numbered 1..{len(rows)}"
    assert len(rows) == len(commands), f"{name}: the table has {len(rows)} rows for {len(commands)} seed commands"
    for row, cmd in zip(rows, commands):
        stated = (row.script, row.experiment, row.dataset)
        assert stated == (cmd.script, cmd.flag("--experiment"), cmd.flag("--dataset")), f"{name}: {row} is not {cmd}"
        assert row.outcome in OUTCOMES, f"{name}: {row}: outcome wording not one of {sorted(OUTCOMES)}"
    return [(OUTCOMES[row.outcome], row.cells) for row in rows]


def checkpoint_files(cell: str | None, steps=(3, 6)) -> list[str] | None:
    """The file names a "files at each checkpoint" cell names for the given steps: backticked patterns with
    ``{step}`` and, for ``{i}``, the range after them (`` `gate-{i}-{step}.pt` (i = 0..11)``); None for "—"."""
    if cell is None or cell.strip() in NONE_CELLS:
        return None
    names = []
    for pattern, last in re.findall(r"`([^`]+)`(?:\s*\(i = 0\.\.(\d+)\))?", cell):
        assert "{step}" in pattern and ("{i}" in pattern) == bool(last), f"cannot read {pattern!r} in {cell!r}"
        indices = range(int(last) + 1) if last else [None]
        names += [pattern.format(i=i, step=step) for i in indices for step in steps]
    assert names and len(names) == len(set(names)), cell
    return sorted(names)


def files_left(folder) -> list[str]:
    """The checkpoint files of an experiment folder (what a "files at each checkpoint" cell lists)."""
    return sorted(p.name for pattern in ("model-*.pt", "gate-*.pt", "layer-map-*") for p in folder.glob(pattern))


def additions(name: str) -> list[Command]:
    """The commands a maintained document adds after its seed commands (worked examples)."""
    everything = parse_commands(REPO / "doc" / name)
    return everything[len(parse_commands(REPO / "doc" / name, STOP)) :]


def shrink(cmd: Command, models: dict) -> list[str]:
    """The allowed rewrites: tiny model, small step counts, --max_seq_len 32, checkpoint numbers mapped onto
    the shrunken runs (a document's checkpoint is always a run's last step -> 6; --ckpt 0 stays 0)."""
    values: dict[str, object] = dict(SHRINK)
    if cmd.flag("--ptrain_ver") is not None:
        values["ptrain_ver"] = models[cmd.flag("--model")]
    if cmd.flag("--ckpt") not in (None, "0"):
        values["ckpt"] = SHRINK["total_step"]
    if cmd.script in LAYER_WISE:  # the teacher's last checkpoint, the tiny teacher's widths; no --max_seq_len
        values.update(
            tckpt=SHRINK["total_step"],
            gate_total_step=SHRINK["total_step"],
            gate_warmup_step=SHRINK["warmup_step"],
            **TINY_WIDTHS,
        )
        values.pop("max_seq_len")
    return rewrite(cmd, **values)[1:]  # without the script name


def assert_no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def single_error(proc) -> str:
    """The documented failure: exit status 2, one stderr line ``error: ...``, nothing else on stderr."""
    assert_no_traceback(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def warnings_of(proc) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]


def check_recorded_config(folder, cmd: Command, argv: list[str]) -> None:
    """config.json holds the document's value of every flag the test did not rewrite."""
    config = json.loads((folder / "config.json").read_text())
    for flag_name, value in cmd.flags.items():
        key = flag_name[2:]
        if flag_name in REWRITABLE:
            value = argv[argv.index(flag_name) + 1]
        recorded = config[key]
        if isinstance(recorded, bool):
            assert recorded is True and value == "", (key, recorded)
        elif isinstance(recorded, (int, float)):
            assert recorded == type(recorded)(value), (key, recorded, value)
        else:
            assert str(recorded) == value, (key, recorded, value)


def check_fine_tune(proc, cmd: Command, argv: list[str], exp_root, task: str, device_flag: str) -> None:
    assert_no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    folder = exp_root / f"{cmd.flag('--experiment')}_{cmd.flag('--model')}_{task}"
    assert sorted(p.name for p in folder.glob("model-*.pt")) == CKPTS
    assert (folder / "model" / "config.json").is_file()
    check_recorded_config(folder, cmd, argv)
    assert any((exp_root / "log" / folder.name).glob("events.out.tfevents.*"))
    # One line for the device; --amp on a CPU adds its own (bf16 autocast or fp32, depending on the processor).
    warns = warnings_of(proc)
    device = [w for w in warns if "CUDA is not available" in w]
    assert len(device) == 1 and device_flag in device[0] and "running on CPU" in device[0], warns
    assert len(warns) == 1 + (cmd.flag("--amp") is not None), warns
    if cmd.flag("--amp") is not None:
        assert any(w.startswith("warning: --amp on CPU") for w in warns), warns


def check_error(proc, outcome: str, cmd: Command, data_root, exp_root, task: str) -> None:
    err = single_error(proc)
    exp, model, dataset = cmd.flag("--experiment"), cmd.flag("--model"), cmd.flag("--dataset")
    if outcome == NO_FOLDER:
        folder = exp_root / f"{exp}_{model}_{task}"
        assert f"experiment folder {folder} not found" in err, err
    elif outcome == NO_LOGITS:
        missing = data_root / "logits" / dataset / "train"
        assert f"--dataset {dataset!r}" in err and f"logits data set {missing} not found" in err, err
        assert "run_fine_tune_gen_logits.py" in err, err
    elif outcome == NO_CKPT:
        assert "model-0.pt not found" in err and "checkpoints there: 3, 6" in err, err
    elif outcome == BAD_SPLIT:
        assert f"--dataset {dataset!r}" in err and "valid splits: train, val, test" in err, err
    else:
        raise AssertionError(outcome)


def test_boolq_document(run, cpu_only, tiny_bert, tiny_albert, data_root, exp_root):
    commands = doc_commands("fine_tune_boolq.md")
    assert len(commands) == 14  # also without ../shared: the document keeps all 14 seed commands
    expected = expected_outcomes("fine_tune_boolq.md", commands)
    models = {"bert": str(tiny_bert), "albert": str(tiny_albert)}

    for cmd, (outcome, _) in zip(commands, expected):
        argv = shrink(cmd, models)
        proc = run(cmd.script, *argv, check=False)
        if outcome != RUNS:
            check_error(proc, outcome, cmd, data_root, exp_root, "boolq")
            continue
        assert_no_traceback(proc)
        assert proc.returncode == 0, (str(cmd), proc.stderr)
        if cmd.script == "run_fine_tune.py":
            check_fine_tune(proc, cmd, [cmd.script, *argv], exp_root, "boolq", "--num_gpu 1")
        elif cmd.script == "run_fine_tune_eval.py":  # every checkpoint, the best accuracy printed, no warning
            dataset = cmd.flag("--dataset")
            assert proc.stderr.strip() == "", proc.stderr
            folder = exp_root / f"{cmd.flag('--experiment')}_{cmd.flag('--model')}_boolq"
            table = json.loads((folder / f"eval-{dataset}.json").read_text())
            assert [r["ckpt"] for r in table["rows"]] == [3, 6] and table["split"] == dataset
            assert re.search(r"^best accuracy: [01]\.\d{6} at model-[36]\.pt$", proc.stdout, re.M), proc.stdout

    # The same documented error from a real shell process: one line, exit status 2.
    last = commands[-1]
    proc = subprocess.run(
        [sys.executable, str(REPO / last.script), *shrink(last, models)],
        capture_output=True,
        text=True,
        cwd=str(data_root.parent),
        timeout=HANG_GUARD,
        env={**os.environ, "FT_DATA_ROOT": str(data_root), "FT_EXP_ROOT": str(exp_root)},
    )
    assert single_error(proc) == (
        "error: --dataset 'dev_mismatched' is not a boolq split; valid splits: train, val, test"
    )


def test_boolq_document_additions(run, cpu_only, tiny_bert, tiny_albert, data_root, exp_root, monkeypatch):
    """The worked examples the maintained document adds (making logits data sets, the TA chain): every
    command is accepted by its script; the logits-generation steps run and name the data set the next step
    reads."""
    extra = additions("fine_tune_boolq.md")
    assert [c.script for c in extra] == [
        "run_fine_tune_gen_logits.py",
        "run_fine_tune_distill.py",
        "run_fine_tune_gen_logits.py",
        "run_fine_tune_gen_logits.py",
    ]
    chain_logits, chain_distill, chain_logits_ta, albert_logits = extra
    # The chain: teacher logits -> TA distillation -> TA logits -> the seed command's --dataset.
    seeds = doc_commands("fine_tune_boolq.md")
    assert chain_logits.flag("--experiment") == seeds[0].flag("--experiment")  # the teacher a seed command makes
    assert chain_logits.flag("--ckpt") == seeds[0].flag("--total_step")  # its last checkpoint
    assert chain_distill.flag("--dataset") == f"{chain_logits.flag('--experiment')}_bert_boolq"
    assert chain_logits_ta.flag("--experiment") == chain_distill.flag("--experiment")
    assert chain_logits_ta.flag("--ckpt") == chain_distill.flag("--total_step")
    seed_distill = [c for c in seeds if c.script == "run_fine_tune_distill.py"]
    assert seed_distill[0].flag("--dataset") == f"{chain_logits_ta.flag('--experiment')}_bert_boolq"
    assert seed_distill[1].flag("--dataset") == f"{albert_logits.flag('--experiment')}_albert_boolq"
    assert albert_logits.flag("--ckpt") == seeds[7].flag("--total_step")

    # Every command parses (flags, types, choices): the planners are replaced by recorders (logits generation:
    # its planner, which would need the teachers made below, records the parsed flags; the run gets its plan).
    import fine_tune.evaluate as evaluate
    import fine_tune.plan.inference as inference
    import fine_tune.plan.training as training_plans
    import fine_tune.run as running

    seen = []

    def plan_recorder(flags):
        seen.append(("plan_gen_logits", flags))
        return ("plan of", flags)

    with monkeypatch.context() as m:
        m.setattr(inference, "plan_gen_logits", plan_recorder)
        m.setattr(running, "run", lambda plan: None)
        for module, fn in ((training_plans, "plan_offline_distill"), (evaluate, "run_gen_logits")):
            m.setattr(module, fn, lambda args, fn=fn: seen.append((fn, args)))
        for cmd in extra:
            proc = run(cmd.script, *cmd.argv[1:], check=False)
            assert proc.returncode == 0 and proc.stderr == "", (str(cmd), proc.stderr)
    assert [fn for fn, _ in seen] == [
        "plan_gen_logits",
        "run_gen_logits",
        "plan_offline_distill",
        "plan_gen_logits",
        "run_gen_logits",
        "plan_gen_logits",
        "run_gen_logits",
    ]
    for i in (0, 3, 5):  # the run function gets what the planner made of the parsed flags
        assert seen[i + 1][1] == ("plan of", seen[i][1])
    for i, cmd in zip((0, 3, 5), (chain_logits, chain_logits_ta, albert_logits)):
        flags = seen[i][1]
        assert (flags.experiment.experiment, flags.experiment.model, flags.checkpoint.ckpt) == (
            cmd.flag("--experiment"),
            cmd.flag("--model"),
            cmd.flag("--ckpt"),
        )
    distil = seen[2][1]
    assert distil.student.num_hidden_layers == 12 and distil.device.amp and distil.student.d_model == 1024

    # The logits steps for real, on the teachers the seed commands create (shrunken as in the seed test).
    models = {"bert": str(tiny_bert), "albert": str(tiny_albert)}
    for teacher in (seeds[0], seeds[7]):  # BLarge_3_uncased, ALBERT 1
        run(teacher.script, *shrink(teacher, models))
    for cmd, name in ((chain_logits, "BLarge_3_uncased_bert_boolq"), (albert_logits, "1_albert_boolq")):
        proc = run(cmd.script, *shrink(cmd, models))
        assert_no_traceback(proc)
        assert proc.stdout.rstrip().endswith(f"use it as --dataset {name}"), proc.stdout
        meta = json.loads((data_root / "logits" / name / "train" / "meta.json").read_text())
        assert meta["checkpoint"] == 6 and meta["num_rows"] == 96


def test_documented_flags_exist(run):
    """Every --flag the maintained documents explain is a flag of some entry script."""
    helps = ""
    for script in (
        "run_fine_tune.py",
        "run_fine_tune_eval.py",
        "run_fine_tune_gen_logits.py",
        "run_fine_tune_distill.py",
        "generate_test_prediction.py",
        "download_data.py",
        *LAYER_WISE,
    ):
        proc = run(script, "--help", check=False)
        assert proc.returncode == 0, proc.stderr
        helps += proc.stdout
    known = set(re.findall(r"--[a-z_0-9]+", helps))
    for name in ("fine_tune_boolq.md", "fine_tune_qqp.md"):
        text = (REPO / "doc" / name).read_text(encoding="utf-8")
        own = text[text.index(STOP) :]  # the maintained document's own prose and tables
        documented = set(re.findall(r"(?<![\w-])--[a-z][a-z_0-9]*", own)) - {"--logdir"}  # tensorboard's
        assert documented and documented <= known, sorted(documented - known)
        assert own.count("<!-- MEASURED-RESULTS -->") == 1 and "## Measured with this toolkit" in own
    for flag_name in (
        "--data_root",
        "--exp_root",
        "--max_examples",
        "--padding",
        "--amp",
        "--init_start",
        "--init_end",
        "--init_step",
        "--init_attn_only",
        "--save_predictions",
        "--overwrite",
    ):
        assert flag_name in (REPO / "doc" / "fine_tune_boolq.md").read_text(encoding="utf-8"), flag_name


def check_layer_wise(proc, cmd: Command, argv: list[str], exp_root) -> None:
    """A layer-wise distillation from the shrunken teacher_base: checkpoints, the config
    (the teacher's max_seq_len / num_class / split, every document flag as given), one device warning."""
    assert_no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    folder = exp_root / f"{cmd.flag('--experiment')}_bert_qqp"
    assert sorted(p.name for p in folder.glob("model-*.pt")) == CKPTS  # gate files, heat-maps: the doc's table
    check_recorded_config(folder, cmd, argv)
    config = json.loads((folder / "config.json").read_text())
    assert (config["max_seq_len"], config["num_class"], config["dataset"]) == (SHRINK["max_seq_len"], 2, "train")
    assert config["teacher_checkpoint"].endswith("teacher_base_bert_qqp/model-6.pt")
    device_flag = f"--device_id {cmd.flag('--device_id')}"
    warns = warnings_of(proc)
    assert len(warns) == 1 and device_flag in warns[0] and "running on CPU" in warns[0], warns


def test_qqp_document(run, cpu_only, tiny_bert12, data_root, exp_root):
    commands = doc_commands("fine_tune_qqp.md")
    assert len(commands) == 10
    expected = expected_outcomes("fine_tune_qqp.md", commands)
    layer_wise = [c for c in commands if c.script in LAYER_WISE]
    assert len(layer_wise) == 6 and {c.script for c in layer_wise} == set(LAYER_WISE)
    assert all(c.flag("--teacher_exp") == "teacher_base" and c.flag("--tckpt") == "34110" for c in layer_wise)
    models = {"bert": str(tiny_bert12)}

    for cmd, (outcome, cells) in zip(commands, expected):
        argv = shrink(cmd, models)
        proc = run(cmd.script, *argv, check=False)
        files = checkpoint_files(cells.get(FILES_COLUMN))
        if outcome != RUNS:  # AKD_soft_9_42, partial_LAD_0_42 (--device_id 3: no device warning first)
            check_error(proc, outcome, cmd, data_root, exp_root, "qqp")
            assert files is None, f"{cmd}: a command that stops leaves no checkpoint files"
            continue
        assert_no_traceback(proc)
        assert proc.returncode == 0, (str(cmd), proc.stderr)
        folder = exp_root / f"{cmd.flag('--experiment')}_bert_qqp"
        if cmd.script == "run_fine_tune.py" or cmd.script in LAYER_WISE:  # training: the table lists its files
            assert files is not None, f"{cmd}: the table's {FILES_COLUMN!r} cell is empty"
            assert files_left(folder) == files, (str(cmd), files_left(folder))
        if cmd.script == "run_fine_tune.py":  # the teacher, --device_id 1: CPU with one warning line
            check_fine_tune(proc, cmd, [cmd.script, *argv], exp_root, "qqp", "--device_id 1")
        elif cmd.script in LAYER_WISE:
            check_layer_wise(proc, cmd, [cmd.script, *argv], exp_root)
        elif cmd.script == "generate_test_prediction.py":  # LAD_soft_1_42 (--ckpt 56850 -> its last checkpoint)
            assert "model-6.pt" in proc.stdout, proc.stdout
            check_submission(folder / "QQP.tsv", data_root)

    # Extra check, labelled as such: not seed commands but the document's "Evaluating the teacher" commands
    # (same rewrite rules), on the teacher the seed fine-tune created.
    extra = additions("fine_tune_qqp.md")
    assert [(c.script, c.flag("--experiment")) for c in extra] == [
        ("run_fine_tune_eval.py", "teacher_base"),
        ("generate_test_prediction.py", "teacher_base"),
    ]
    evaluation, prediction = extra
    assert evaluation.flag("--dataset") == "dev" and prediction.flag("--ckpt") == "34110"
    proc = run(evaluation.script, *shrink(evaluation, models))
    assert_no_traceback(proc)
    table = json.loads((exp_root / "teacher_base_bert_qqp" / "eval-dev.json").read_text())
    assert [r["ckpt"] for r in table["rows"]] == [3, 6] and set(table["best"]) == {"accuracy", "f1", "loss"}
    assert table["num_rows"] == 48
    proc = run(prediction.script, *shrink(prediction, models))
    assert_no_traceback(proc)
    assert "model-6.pt" in proc.stdout
    check_submission(exp_root / "teacher_base_bert_qqp" / "QQP.tsv", data_root)


def check_submission(path, data_root) -> None:
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    rows = [ln.split("\t") for ln in lines[1:]]
    test_ids = [ln.split("\t")[0] for ln in (data_root / "QQP" / "test.tsv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == test_ids and len(rows) == 32
    assert all(len(r) == 2 and r[1] in ("0", "1") for r in rows)


def test_rewrite_refuses_other_flags():
    cmd = Command("x", ["run_fine_tune.py", "--lr", "1e-5", "--total_step", "100", "--ckpt", "7", "--amp"])
    assert rewrite(cmd, total_step=6, ckpt=3) == [
        "run_fine_tune.py",
        "--lr",
        "1e-5",
        "--total_step",
        "6",
        "--ckpt",
        "3",
        "--amp",
    ]
    assert cmd.flag("--amp") == "" and cmd.flag("--seed") is None
    for bad in (dict(lr="1"), dict(amp=""), dict(experiment="other")):
        with pytest.raises(AssertionError, match="may not rewrite"):
            rewrite(cmd, **bad)
    student = Command("x", ["run_lad_distil.py", "--d_ff", "3072", "--d_model", "768", "--num_attention_heads", "12"])
    assert rewrite(student, d_model=32, d_ff=64, num_attention_heads=2) == [
        "run_lad_distil.py",
        "--d_ff",
        "64",
        "--d_model",
        "32",
        "--num_attention_heads",
        "2",
    ]
    with pytest.raises(AssertionError, match="rewritten together"):
        rewrite(student, d_model=32)


def test_parser_joins_continuations_and_keeps_sections(tmp_path):
    md = tmp_path / "doc.md"
    md.write_text(
        "# T\n\n## Section A\n\n```sh\n# a comment\npython3.8 run_fine_tune.py \\\n--experiment  x  \\\n"
        "--lr 1e-5 \\\n--amp\n\nwget http://example.com/x.zip\n```\n\n```text\n# not a heading\n"
        "python not_sh.py\n```\n\n### Section B\n\n"
        "```sh\npython run_fine_tune_eval.py --experiment x  # note\n```\n"
        "\n## Stop\n\n```sh\npython after.py\n```\n",
        encoding="utf-8",
    )
    commands = parse_commands(md)
    assert [(c.section, c.interpreter, c.argv) for c in commands] == [
        ("Section A", "python3.8", ["run_fine_tune.py", "--experiment", "x", "--lr", "1e-5", "--amp"]),
        ("Section B", "python", ["run_fine_tune_eval.py", "--experiment", "x"]),
        ("Stop", "python", ["after.py"]),
    ]
    assert commands[0].line == 7
    assert [c.script for c in parse_commands(md, "## Stop")] == ["run_fine_tune.py", "run_fine_tune_eval.py"]


def test_outcome_table_parser(tmp_path):
    md = tmp_path / "doc.md"
    md.write_text(
        "# T\n\n## Seed commands: expected outcome\n\nText.\n\n"
        "| # | script | `--experiment` | `--dataset` | outcome | why | files at each checkpoint |\n"
        "|-|-|-|-|-|-|-|\n"
        "| 1 | `run_fine_tune.py` | `t` | `train` | runs | a \\| bar | `model-{step}.pt`, "
        "`gate-{i}-{step}.pt` (i = 0..1) |\n"
        "| 2 | `run_lad_distil.py` | `s` | — | **error: missing   checkpoint** | x | — |\n\n"
        "| other | table |\n|-|-|\n| 3 | x |\n\n## Next\n",
        encoding="utf-8",
    )
    rows = parse_outcome_table(md)
    assert [(r.number, r.script, r.experiment, r.dataset, r.outcome, r.line) for r in rows] == [
        (1, "run_fine_tune.py", "t", "train", "runs", 9),
        (2, "run_lad_distil.py", "s", None, "error: missing checkpoint", 10),
    ]
    assert rows[0].cells["why"] == "a | bar"
    assert checkpoint_files(rows[0].cells[FILES_COLUMN], steps=(6,)) == ["gate-0-6.pt", "gate-1-6.pt", "model-6.pt"]
    assert checkpoint_files(rows[1].cells[FILES_COLUMN]) is None
    md.write_text("## Seed commands: expected outcome\n\n| # | script | outcome |\n|-|-|-|\n| 1 | a.py | runs |\n")
    with pytest.raises(AssertionError, match="lacks the columns"):
        parse_outcome_table(md)
