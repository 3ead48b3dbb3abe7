"""Resume hygiene (issue 29): a config.json edited by hand since the run wrote it is refused on resume (each resume
state records its digest), every model folder an experiment saves names the task's labels, and
``--save_total_limit`` prunes idempotently (a kill between a save and its pruning leaves, once the run is resumed or
re-run, the checkpoints the uninterrupted run leaves). Kills are deterministic (tests/killpoint.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from test_eval_during_training import RUN, scripted
from test_never_lose_a_run import flip_first_label, killed_after, one_line_error, snapshot, tune


def models(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("model-*.pt"))


def without_lock_record(files: dict[str, bytes]) -> dict[str, bytes]:
    """A snapshot less the killed run's lock record (the next run's lock replaces it: fine_tune/locking.py)."""
    return {k: v for k, v in files.items() if not k.endswith(".writer.json")}


def test_a_config_edited_by_hand_is_refused_on_resume(run, tiny_bert, data_root, exp_root):
    killed_after("after:resume-2.pt", "run_fine_tune.py", tune("r", tiny_bert), data_root, exp_root)
    folder = exp_root / "r_bert_qqp"
    assert "config_sha256" in torch.load(folder / "resume-2.pt", weights_only=True, mmap=True)
    config = json.loads((folder / "config.json").read_text())
    config["lr"] = 2e-3  # edited, and the command says the same: the guard alone sees no difference
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    before = without_lock_record(snapshot(exp_root))
    line = one_line_error(run("run_fine_tune.py", *tune("r", tiny_bert, "--lr", "2e-3"), check=False))
    assert line == (
        f"error: {folder / 'config.json'} was edited since this run wrote it (its fields no longer have "
        f"the sha256 recorded in resume-2.pt): resuming would continue the run under settings it did not "
        f"train with; restore the file, or pass --overwrite to start over"
    )
    assert without_lock_record(snapshot(exp_root)) == before
    out = run("run_fine_tune.py", *tune("r", tiny_bert, "--lr", "2e-3", "--overwrite"))  # starts over
    assert "--overwrite: starting over" in out.stderr and "resuming from" not in out.stderr
    assert (folder / "model-4.pt").is_file()


def test_cleared_recorded_inputs_are_refused_on_resume(run, tiny_bert, data_root, exp_root):
    # F3: the training file changed and config.json's recorded inputs cleared by hand, so no input check sees it:
    # the digest in the resume state covers the recorded inputs
    killed_after("after:resume-2.pt", "run_fine_tune.py", tune("p", tiny_bert), data_root, exp_root)
    flip_first_label(data_root / "QQP" / "train.tsv")
    folder = exp_root / "p_bert_qqp"
    config = json.loads((folder / "config.json").read_text())
    config["provenance"]["data_files"] = {}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    before = without_lock_record(snapshot(exp_root))
    line = one_line_error(run("run_fine_tune.py", *tune("p", tiny_bert), check=False))
    assert line.startswith(f"error: {folder / 'config.json'} was edited since this run wrote it")
    assert without_lock_record(snapshot(exp_root)) == before


def test_a_resumed_run_killed_again_still_resumes(run, tiny_bert, data_root, exp_root):
    # the resumed run rewrites config.json (its provenance) and is killed before its next checkpoint: the resume
    # state it resumed from still matches (runtime fields aside)
    killed_after("after:resume-2.pt", "run_fine_tune.py", tune("a", tiny_bert), data_root, exp_root)
    killed_after("after:config.json", "run_fine_tune.py", tune("a", tiny_bert), data_root, exp_root)
    out = run("run_fine_tune.py", *tune("a", tiny_bert))
    assert "resuming from model-2.pt" in out.stderr and (exp_root / "a_bert_qqp" / "model-4.pt").is_file()


def test_every_saved_model_folder_names_the_task_labels(run, tiny_bert, tmp_path, exp_root):
    # a classifier folder of another task (its own label names) as --ptrain_ver of a BoolQ run
    other = tmp_path / "other-classifier"
    shutil.copytree(tiny_bert, other)
    config = json.loads((other / "config.json").read_text())
    config.update(id2label={"0": "LABEL_A", "1": "LABEL_B"}, label2id={"LABEL_A": 0, "LABEL_B": 1})
    (other / "config.json").write_text(json.dumps(config))
    run(
        "run_fine_tune.py",
        "--experiment",
        "lbl",
        "--ptrain_ver",
        str(other),
        "--model",
        "bert",
        "--task",
        "boolq",
        "--total_step",
        "2",
        "--warmup_step",
        "0",
        "--ckpt_step",
        "2",
        "--batch_size",
        "8",
        "--max_seq_len",
        "24",
    )
    saved = json.loads((exp_root / "lbl_bert_boolq" / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "False", "1": "True"} and saved["label2id"] == {"False": 0, "True": 1}
    # a student built from its widths (logits KD) too: QQP's names (Hugging Face's), not LABEL_0 / LABEL_1
    run("run_fine_tune.py", *tune("t", tiny_bert, "--total_step", "2", "--warmup_step", "0"))
    run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "t",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "train",
        "--ckpt",
        "2",
    )
    run(
        "run_fine_tune_distill.py",
        "--experiment",
        "kd",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "t_bert_qqp",
        "--d_model",
        "16",
        "--d_ff",
        "32",
        "--num_attention_heads",
        "2",
        "--num_hidden_layers",
        "1",
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--batch_size",
        "8",
        "--max_seq_len",
        "24",
    )
    saved = json.loads((exp_root / "kd_bert_qqp" / "model" / "config.json").read_text())
    assert saved["id2label"] == {"0": "not_duplicate", "1": "duplicate"}
    assert saved["label2id"] == {"not_duplicate": 0, "duplicate": 1}


def test_a_kill_before_pruning_the_last_checkpoint_is_pruned_on_the_rerun(run, tiny_bert, data_root, exp_root):
    limit = ["--save_total_limit", "1"]
    run("run_fine_tune.py", *tune("ref", tiny_bert, *limit))  # the uninterrupted run
    assert models(exp_root / "ref_bert_qqp") == ["model-4.pt"]
    killed_after("after:resume-4.pt", "run_fine_tune.py", tune("k", tiny_bert, *limit), data_root, exp_root)
    folder = exp_root / "k_bert_qqp"
    assert models(folder) == ["model-2.pt", "model-4.pt"]  # killed between the last save and its pruning
    out = run("run_fine_tune.py", *tune("k", tiny_bert, *limit))
    assert "already finished" in out.stdout and "--save_total_limit 1: deleted model-2.pt" in out.stderr
    assert models(folder) == models(exp_root / "ref_bert_qqp")
    run("run_fine_tune.py", *tune("k", tiny_bert, *limit))  # idempotent
    assert models(folder) == ["model-4.pt"]


def test_a_kill_before_pruning_is_pruned_when_the_run_resumes(run, tiny_bert, data_root, exp_root):
    args = tune("m", tiny_bert, "--save_total_limit", "1", "--total_step", "6")
    killed_after("after:resume-4.pt", "run_fine_tune.py", args, data_root, exp_root)
    folder = exp_root / "m_bert_qqp"
    assert models(folder) == ["model-2.pt", "model-4.pt"]
    # the resumed run prunes before it trains: killed once its next checkpoint is written, only 4 and 6 are left
    killed_after("after:model-6.pt", "run_fine_tune.py", args, data_root, exp_root)
    assert models(folder) == ["model-4.pt", "model-6.pt"]
    # killed between model-6.pt and its resume state, it resumes from 4 again: model-6.pt (about to be written
    # again) is not counted, so the checkpoint it resumes from stays until the new 6 is complete
    killed_after("after:model-6.pt", "run_fine_tune.py", args, data_root, exp_root)
    assert models(folder) == ["model-4.pt", "model-6.pt"]
    out = run("run_fine_tune.py", *args)
    assert "resuming from model-4.pt" in out.stderr and models(folder) == ["model-6.pt"]


def test_pruning_on_the_rerun_keeps_the_best_checkpoint(run, tiny_bert, exp_root, monkeypatch):
    scripted(monkeypatch, {3: 0.5, 4: 0.5, 6: 0.5, 8: 0.9, 9: 0.5, 12: 0.6})
    args = ["--experiment", "best", "--ptrain_ver", str(tiny_bert), *RUN, "--save_total_limit", "1"]
    run("run_fine_tune.py", *args)
    folder = exp_root / "best_bert_qqp"
    assert models(folder) == ["model-12.pt", "model-8.pt"]
    # the state a kill between the last save and its pruning leaves: an older checkpoint still there
    shutil.copyfile(folder / "model-12.pt", folder / "model-4.pt")
    out = run("run_fine_tune.py", *args)
    assert "already finished" in out.stdout and "deleted model-4.pt" in out.stderr
    assert models(folder) == ["model-12.pt", "model-8.pt"]  # the best (8) and the newest stay


def test_a_finished_run_keeps_its_checkpoints_under_a_smaller_limit(run, tiny_bert, exp_root):
    run("run_fine_tune.py", *tune("keep", tiny_bert))  # no --save_total_limit: model-2.pt and model-4.pt
    folder = exp_root / "keep_bert_qqp"
    before = snapshot(exp_root)
    out = run("run_fine_tune.py", *tune("keep", tiny_bert, "--save_total_limit", "1"))
    assert "already finished" in out.stdout and "deleted" not in out.stderr
    assert (
        "note: keep_bert_qqp finished with no --save_total_limit: a finished run keeps its checkpoints "
        "(--save_total_limit 1 here changes nothing"
    ) in out.stderr
    assert models(folder) == ["model-2.pt", "model-4.pt"]
    assert without_lock_record(snapshot(exp_root)) == without_lock_record(before)


def classifier_folder(tiny: Path, path: Path, labels: list[str]) -> Path:
    """A fine-tuned classifier folder (Hugging Face's layout) of ``len(labels)`` classes named ``labels``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(path)
    return path


def test_a_classifier_of_another_class_count_gets_a_new_head(run, tiny_bert, tmp_path, exp_root, monkeypatch):
    # F9: a 3-class classifier (neg, neu, pos) for 2-class QQP: its encoder is kept, its head replaced, said in a
    # note naming the flag given (never "damaged": the file is sound)
    cls3 = classifier_folder(tiny_bert, tmp_path / "cls3", ["neg", "neu", "pos"])
    note = "is a classifier of 3 classes (neg, neu, pos): its head is discarded and a new head for the task's 2 classes"
    out = run("run_fine_tune.py", *tune("c3", cls3, "--total_step", "2", "--warmup_step", "0"))
    assert f"note: --ptrain_ver {cls3} {note}" in out.stderr and "damaged" not in out.stderr
    folder = exp_root / "c3_bert_qqp"
    state = torch.load(folder / "model-2.pt", weights_only=True)
    assert state["classifier.weight"].shape[0] == 2
    assert json.loads((folder / "model" / "config.json").read_text())["id2label"] == {
        "0": "not_duplicate",
        "1": "duplicate",
    }
    # the same folder as the student of logits KD: the note names --student_ptrain_ver
    run(
        "run_fine_tune_gen_logits.py",
        "--experiment",
        "c3",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "train",
        "--ckpt",
        "2",
    )
    out = run(
        "run_fine_tune_distill.py",
        "--experiment",
        "kd3",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "c3_bert_qqp",
        "--student_ptrain_ver",
        str(cls3),
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--batch_size",
        "8",
        "--max_seq_len",
        "24",
    )
    assert f"note: --student_ptrain_ver {cls3} {note}" in out.stderr and "--ptrain_ver" not in out.stderr.replace(
        "--student_ptrain_ver", ""
    )
    assert (exp_root / "kd3_bert_qqp" / "model-1.pt").is_file()
    # sound files that fail as they load (transformers' own error): the line names the flag given, not "damaged",
    # and the new experiment is not left behind
    from fine_tune.models import classifier

    def fails(*args, **kwargs):
        raise RuntimeError("Error(s) in loading state_dict (simulated)")

    monkeypatch.setattr(classifier.AutoModelForSequenceClassification, "from_pretrained", fails)
    out = run(
        "run_fine_tune_distill.py",
        "--experiment",
        "kd4",
        "--model",
        "bert",
        "--task",
        "qqp",
        "--dataset",
        "c3_bert_qqp",
        "--student_ptrain_ver",
        str(cls3),
        "--total_step",
        "1",
        "--warmup_step",
        "0",
        "--batch_size",
        "8",
        "--max_seq_len",
        "24",
        check=False,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: --student_ptrain_ver {str(cls3)!r}: could not load the weights (Error(s) in loading "
        f"state_dict (simulated))"
    )
    assert not (exp_root / "kd4_bert_qqp").exists()


def test_weights_failing_to_load_leave_nothing_of_a_new_experiment(run, tiny_bert, data_root, exp_root, monkeypatch):
    # weights that pass the plan's check but fail as they load: a new experiment leaves no folder, no TensorBoard
    # folder (the corrected command is then not refused as "a different config"); a resumed one loses nothing
    from fine_tune.errors import UserError
    from fine_tune.run import student

    killed_after("after:resume-2.pt", "run_fine_tune.py", tune("old", tiny_bert), data_root, exp_root)
    before = without_lock_record(snapshot(exp_root / "old_bert_qqp"))

    def fails(source, *args):
        raise UserError(f"--ptrain_ver {source!r}: could not load the weights (simulated)")

    monkeypatch.setattr(student, "build_pretrained_classifier", fails)
    line = one_line_error(run("run_fine_tune.py", *tune("new", tiny_bert), check=False))
    assert line.endswith("could not load the weights (simulated)")
    assert not (exp_root / "new_bert_qqp").exists() and not (exp_root / "log" / "new_bert_qqp").exists()
    out = run("run_fine_tune.py", *tune("old", tiny_bert), check=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].endswith("(simulated)")
    after = without_lock_record(snapshot(exp_root / "old_bert_qqp"))
    assert {k: v for k, v in after.items() if k != "config.json"} == {
        k: v for k, v in before.items() if k != "config.json"
    } and "resume-2.pt" in after
    monkeypatch.undo()
    out = run("run_fine_tune.py", *tune("old", tiny_bert))
    assert "resuming from model-2.pt" in out.stderr
    run("run_fine_tune.py", *tune("new", tiny_bert, "--total_step", "2"))  # the corrected command starts afresh
