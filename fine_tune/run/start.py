"""How a training run starts in its experiment folder: the config guard, resuming a killed run, recognising a
finished one, and ``--overwrite``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import config as cfg
from ..engine import distributed
from ..engine.evaluation import EARLY_STOP_FILE
from ..errors import UserError
from ..experiment import ExperimentDir
from ..io_utils import TMP_PREFIX, remove_inside
from ..locking import HOLDER_FILE, lock_folder
from ..plan import RunPlan
from ..progress import say
from ..provenance import collect
from ..selection import metric_for_best


@dataclass
class Start:
    run: bool  # False: this exact run already finished
    resume_step: int | None = None  # continue from this checkpoint
    # fidelity-fix fields the resumed run's config.json lacks, with its old rule (config.LEGACY_FIELDS)
    legacy: dict[str, Any] = field(default_factory=dict)
    config_sha256: str | None = None  # config.config_digest of the config.json this run wrote (its resume states')
    # the folders this start created (the experiment folder, then any missing parent), deepest first: a new
    # experiment's, removed again when its weights fail to load (remove_new_experiment); empty when it existed
    created: list[Path] = field(default_factory=list)
    log_existed: bool = True  # whether the experiment's TensorBoard folder existed before this start


def _rules(legacy: dict[str, Any]) -> str:
    """The old rules a run keeps, each as its field and value: ``tinybert_fit_dense when_widths_differ,
    pkd_cls_reduction sum``."""
    return ", ".join(f"{k} {v if isinstance(v, str) else v!r}" for k, v in legacy.items())


def clear_outputs(exp: ExperimentDir) -> None:
    """``--overwrite``: delete everything the old run left in its folder (checkpoints, resume states, method
    files, heat-maps, eval tables and predictions, submissions, the model folder, leftover temporary files of a
    killed write) and its TensorBoard folder; only ``config.json`` stays, to be replaced by the new run's. Both
    folders are this experiment's own, and both are checked to lie inside the experiment root."""
    root = exp.root.resolve()
    for folder in (exp.path, exp.log_dir):
        if folder.resolve().parent not in (root, root / "log"):
            raise UserError(f"--overwrite: {folder} is not inside the experiment root {exp.root}; nothing deleted")
    for entry in exp.path.iterdir():
        if entry.name not in ("config.json", HOLDER_FILE):
            remove_inside(entry, exp.path)
    if exp.log_dir.exists():
        remove_inside(exp.log_dir, exp.root)


def stopped_early(exp: ExperimentDir) -> int | None:
    """The step at which the run in ``exp`` stopped early (``--early_stop_patience``), or None."""
    path = exp.path / EARLY_STOP_FILE
    if not path.is_file():
        return None
    try:
        return int(cfg.load_config(path, required=("step",))["step"])
    except (UserError, TypeError, ValueError):
        return None  # a damaged marker: the run resumes from its resume state, which knows it stopped


def changed_input(old: dict, data_files: dict[str, str], config_path: Path) -> str | None:
    """Before a resume: every input the run recorded when it started (data files, logits set, teacher checkpoint,
    pretrained weights; config.json's provenance) still has its sha256; else what changed, in words. A file is
    matched by its path, or, when the roots moved, by its name if that is unique; a file the run did not record is
    not checked."""
    recorded = (old.get("provenance") or {}).get("data_files") or {}
    by_name: dict[str, list[str]] = {}
    for path, digest in recorded.items():
        by_name.setdefault(Path(path).name, []).append(digest)
    for path, digest in data_files.items():
        before = recorded.get(path)
        if before is None and len(by_name.get(Path(path).name, [])) == 1:
            before = by_name[Path(path).name][0]
        if before is not None and before != digest:
            return (
                f"{path} changed since this run started (sha256 {digest[:12]}… now, {before[:12]}… recorded in "
                f"{config_path}): resuming would train on other inputs"
            )
    return None


def edited_config(exp: ExperimentDir, old: dict, step: int) -> str | None:
    """Before a resume from ``step``: why ``config.json`` is not the one the run wrote (its fields no longer have
    the digest its resume state recorded: edited by hand since), in words; or None. A resume state written
    before the digest was recorded is not checked."""
    from ..engine.checkpoint import load_resume_state, resume_path

    recorded = load_resume_state(exp.path, step, mmap=True).get("config_sha256")
    if recorded is None or recorded == cfg.config_digest(old):
        return None
    return (
        f"{exp.config_path} was edited since this run wrote it (its fields no longer have the sha256 recorded "
        f"in {resume_path(exp.path, step).name}): resuming would continue the run under settings it did not "
        f"train with"
    )


def prune_finished(exp: ExperimentDir, old: dict, flag: int | None, step: int, metric: str) -> None:
    """A finished run killed after its last save, before ``--save_total_limit`` pruned: finish its own pruning, to
    the limit it ran with (its config.json's ``save_total_limit``; none: nothing is pruned), as the run does
    (engine/checkpoint.prune_checkpoints), keeping the best checkpoint of the evaluation during training its last
    resume state holds. A finished run keeps its checkpoints: the re-run's ``--save_total_limit`` (``flag``) never
    deletes one, and a note says so when it differs. Without a resume state nothing is pruned (which files are the
    method's, and which checkpoint is the best, are not known)."""
    from ..engine.checkpoint import load_resume_state, prune_checkpoints, resume_steps
    from ..engine.evaluation import best_checkpoint_row

    limit = old.get("save_total_limit")
    if (flag or None) != (limit or None):
        ran = f"--save_total_limit {limit}" if limit else "no --save_total_limit"
        given = f"--save_total_limit {flag}" if flag else "no --save_total_limit"
        say(
            f"note: {exp.name} finished with {ran}: a finished run keeps its checkpoints ({given} here changes "
            f"nothing; only a pruning of its own that a kill stopped is finished)"
        )
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0 or step not in resume_steps(exp.path):
        return
    state = load_resume_state(exp.path, step, mmap=True)
    rows = ((state.get("evaluation") or {}).get("history") or {}).get("rows") or []
    best = best_checkpoint_row(rows, metric) if rows and all(metric in r for r in rows) else None
    pruned = prune_checkpoints(exp, limit, step, None if best is None else best["step"], state.get("method") or {})
    if pruned:
        say(
            f"note: {exp.name}: --save_total_limit {limit}: deleted "
            f"{', '.join(exp.checkpoint_path(s).name for s in pruned)} (a kill had stopped the run before it "
            f"pruned them)"
        )


def whole_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a checkpoint that reads back whole; a damaged one is named on stderr."""
    from ..engine.checkpoint import read_checkpoint

    if not path.is_file():
        return False
    try:
        read_checkpoint(path, mmap=True)
    except UserError as e:
        say(f"note: {e}: it does not count as a checkpoint of this run")
        return False
    return True


def remove_new_experiment(exp: ExperimentDir, start: Start) -> None:
    """A new experiment whose model or teacher failed to load before it trained: remove what its start wrote (the
    experiment folder with its lock record, config.json and model folder; a TensorBoard folder that did not exist
    before; the parent folders the start created, when empty), so the corrected command starts afresh. An
    experiment that existed before this start (a resume, ``--overwrite``) is left as it is. Rank 0 only."""
    if not start.created or start.created[0] != exp.path or not distributed.is_main():
        return
    remove_inside(exp.path, exp.root)  # under the lock, held on until the workflow ends: no other writer meanwhile
    if not start.log_existed and exp.log_dir.exists():
        remove_inside(exp.log_dir, exp.root)
    for folder in start.created[1:]:  # the parents it created, deepest first, while empty
        try:
            folder.rmdir()
        except OSError:
            break


def start_experiment(plan: RunPlan) -> Start:
    """Write config.json (after the guard) and decide how to start: a new run, the continuation of a killed
    run with the same config (from its latest checkpoint with a resume state), or nothing when the run
    already finished. ``--overwrite`` with a different config deletes the old run's outputs first.
    Under torchrun rank 0 decides (and writes); every rank follows its decision."""
    return distributed.broadcast_from_main(lambda: _start_experiment(plan))


def _start_experiment(plan: RunPlan) -> Start:
    from ..engine.checkpoint import resume_steps

    exp, record, data_files, overwrite = plan.exp, plan.record, plan.inputs, plan.overwrite
    total_step = plan.training.total_step
    cfg.guard_experiment(exp.config_path, record, overwrite)  # refused: nothing written
    device, _ = plan.devices.resolve()  # their warnings once the guard passed, as the run starts
    # one writer per experiment: the lock is held until the workflow ends (fine_tune/locking.py); the guard runs
    # again under it, as the holder before us may have changed the folder
    created = [p for p in (exp.path, *exp.path.parents) if not p.exists()]
    log_existed = exp.log_dir.exists()
    exp.path.mkdir(parents=True, exist_ok=True)
    lock_folder(exp.path, "experiment")
    old = cfg.guard_experiment(exp.config_path, record, overwrite)
    for leftover in exp.path.glob(TMP_PREFIX + "*"):  # of a killed write of this experiment (we hold its lock)
        remove_inside(leftover, exp.path)
    same = old is not None and not cfg.changed_fields(old, record)
    old = old or {}  # (read only where same holds: this same run's config.json)
    # (not the same run: a new folder, or --overwrite; a --config re-run of an older run keeps its rules: the plan's)
    legacy = cfg.legacy_values(old, record) if same else dict(plan.legacy)
    if legacy != plan.legacy:  # the plan built the method for the config.json it read: another writer since
        raise UserError(f"{exp.config_path} changed while this run was being planned; run the command again")
    start = Start(True, legacy=legacy, created=created, log_existed=log_existed)
    # The resume state is written last at every checkpoint (Trainer.save), and the previous one is deleted only
    # after it: a last checkpoint whose resume state is missing while an older one exists is a run killed while
    # writing it (resumed below). With no resume state at all (deleted to save space), model-{total} means done.
    # A checkpoint that is not whole (damaged on disk) counts as absent.
    ready = [s for s in resume_steps(exp.path) if whole_checkpoint(exp.checkpoint_path(s))] if same else []
    final_whole = same and (total_step in ready or whole_checkpoint(exp.checkpoint_path(total_step)))
    flag, metric = plan.training.save_total_limit, metric_for_best(plan.task, record.get("metric_for_best"))
    if final_whole and (not ready or ready[-1] == total_step):
        print(f"{exp.path}: already finished (model-{total_step}.pt exists); nothing to do")
        prune_finished(exp, old, flag, total_step, metric)
        return Start(False, legacy=legacy)
    stopped = stopped_early(exp)
    if same and stopped is not None and ready and ready[-1] == stopped:
        print(f"{exp.path}: already finished (stopped early at step {stopped}, {EARLY_STOP_FILE}); nothing to do")
        prune_finished(exp, old, flag, stopped, metric)
        return Start(False, legacy=legacy)
    if same:
        changed = (
            edited_config(exp, old, ready[-1]) or changed_input(old, data_files, exp.config_path) if ready else None
        )
        if changed and not overwrite:
            raise UserError(f"{changed}; restore the file, or pass --overwrite to start over")
        if changed:  # --overwrite: the same config on other inputs is another run
            say(f"note: {changed}; --overwrite: starting over")
            clear_outputs(exp)
            ready = []
        if ready:
            start = Start(True, ready[-1], legacy, created=created, log_existed=log_existed)
            say(
                f"{exp.name}: resuming from model-{ready[-1]}.pt (same config; pass --overwrite with "
                f"another config to start over)"
            )
        elif exp.checkpoints():
            say(f"{exp.name}: checkpoints {exp.checkpoints()} have no resume state; starting over")
        if legacy:
            say(
                f"{exp.name}: started before a fidelity fix ({', '.join(legacy)} not in its config.json): it "
                f"continues with the rule it started with: {_rules(legacy)} (doc/methods.md, \"Fidelity fixes\")"
            )
    elif legacy:
        say(
            f"{exp.name}: re-issued from {record.get('config_from')}, a run started before a fidelity fix "
            f"({', '.join(legacy)} not in it): it keeps that run's rule: {_rules(legacy)} (doc/methods.md, "
            f"\"Fidelity fixes\")"
        )
    if old is not None and not same:  # --overwrite: start over, drop every output of the old run
        clear_outputs(exp)
    record = {k: v for k, v in record.items() if k not in legacy}  # the config keeps saying which rule runs
    record = cfg.as_before(old if same else None, record)
    record = dict(record, provenance=collect(device, data_files))
    cfg.save_config(exp.config_path, record)
    start.config_sha256 = cfg.config_digest(cfg.load_config(exp.config_path))  # as written: what a resume compares
    return start
