"""Every command of the maintained task documents, parsed from the documents themselves, gets the outcome the
documents' "Seed commands: expected outcome" table promises. Only the model source, step counts, checkpoint
numbers and max_seq_len are rewritten (tests/doc_commands.py enforces that)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, SHARED
from doc_commands import parse_commands, rewrite
from fine_tune import synthetic

STOP = "## Seed commands: expected outcome"
LAYER_WISE = {"run_lad_distil.py", "run_lad_no_distil.py", "run_probing_lad.py", "run_alp_distil.py",
              "run_pkd_distill.py"}
SHRINK = dict(total_step=6, warmup_step=1, ckpt_step=3, log_step=3, max_seq_len=32)


def doc_commands(name: str):
    commands = [c for c in parse_commands(REPO / "doc" / name, STOP) if c.script != "download_data.py"]
    seed = SHARED / "seeds" / name
    if seed.is_file():  # the maintained document keeps every original command, in order, with its values
        original = parse_commands(seed)
        assert [c.argv for c in commands] == [c.argv for c in original]
    return commands


def shrink(cmd, models):
    values = dict(SHRINK)
    if cmd.flag("--ptrain_ver") is not None:
        values["ptrain_ver"] = str(models[cmd.flag("--model")])
    ckpt = cmd.flag("--ckpt")
    if ckpt not in (None, "0"):
        values["ckpt"] = SHRINK["total_step"]
    return rewrite(cmd, **values)[1:]  # without the script name


def single_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_boolq_document(run, tiny_bert, tiny_albert, data_root, exp_root):
    commands = doc_commands("fine_tune_boolq.md")
    assert len(commands) == 14
    models = {"bert": tiny_bert, "albert": tiny_albert}
    outcomes = [run(c.script, *shrink(c, models), check=False) for c in commands]
    by_exp = list(zip(commands, outcomes))

    for cmd, proc in by_exp:
        exp, script = cmd.flag("--experiment"), cmd.script
        if script == "run_fine_tune.py":
            assert proc.returncode == 0, proc.stderr
            folder = exp_root / f"{exp}_{cmd.flag('--model')}_boolq"
            assert sorted(p.name for p in folder.glob("model-*.pt")) == ["model-3.pt", "model-6.pt"]
            warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
            assert any("--num_gpu 1" in w and "CPU" in w for w in warnings)
            assert len(warnings) == (2 if cmd.flag("--amp") is not None else 1)  # device (+ amp) line
        elif cmd.flag("--dataset") == "dev_mismatched":
            assert "valid splits: train, val, test" in single_error(proc)
        elif exp in ("BLarge_2", "BLarge_uncased_TA_1", "BLarge_uncased_TA_3", "distill_1") and script != "run_fine_tune_distill.py":
            assert f"{exp}_{cmd.flag('--model')}_boolq" in single_error(proc) and "not found" in proc.stderr
        elif script == "run_fine_tune_distill.py":
            err = single_error(proc)
            assert cmd.flag("--dataset") in err and "logits data set" in err
        elif script == "run_fine_tune_gen_logits.py":  # ALBERT --ckpt 0: no checkpoint 0
            assert "checkpoints there: 3, 6" in single_error(proc)
        else:  # ALBERT evals of experiment 1
            assert script == "run_fine_tune_eval.py" and exp == "1", cmd.argv
            assert proc.returncode == 0, proc.stderr
            assert (exp_root / "1_albert_boolq" / f"eval-{cmd.flag('--dataset')}.json").is_file()


def test_qqp_document(run, tiny_bert12, data_root, exp_root):
    commands = doc_commands("fine_tune_qqp.md")
    layer_wise = [c for c in commands if c.script in LAYER_WISE]
    assert len(commands) == 10 and len(layer_wise) == 6
    models = {"bert": tiny_bert12}
    for cmd in commands:
        if cmd.script in LAYER_WISE:
            continue  # the layer-wise distillation scripts come with the layer-wise issue
        proc = run(cmd.script, *shrink(cmd, models), check=False)
        exp = cmd.flag("--experiment")
        if cmd.script == "run_fine_tune.py":
            assert proc.returncode == 0, proc.stderr
            warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
            assert len(warnings) == 1 and "--device_id 1" in warnings[0]
            assert (exp_root / "teacher_base_bert_qqp" / "model-6.pt").is_file()
        else:  # AKD_soft_9_42, partial_LAD_0_42, LAD_soft_1_42: no command here creates them
            assert f"{exp}_bert_qqp" in single_error(proc)

    # Extra check, outside the document's commands: the teacher it does create evaluates and predicts.
    run("run_fine_tune_eval.py", "--experiment", "teacher_base", "--model", "bert", "--task", "qqp",
        "--dataset", "dev", "--batch_size", "512")
    run("generate_test_prediction.py", "--experiment", "teacher_base", "--model", "bert", "--task", "qqp",
        "--dataset", "test", "--batch_size", "256", "--ckpt", "6")
    lines = (exp_root / "teacher_base_bert_qqp" / "QQP.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 33


def test_rewrite_refuses_other_flags():
    from doc_commands import Command

    cmd = Command("x", ["run_fine_tune.py", "--lr", "1e-5", "--total_step", "100"])
    assert rewrite(cmd, total_step=6) == ["run_fine_tune.py", "--lr", "1e-5", "--total_step", "6"]
    with pytest.raises(AssertionError):
        rewrite(cmd, lr="1")
