"""How a training run starts in its experiment folder: the config guard, resuming a killed run, recognising a
finished one, and ``--overwrite``."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import config as cfg
from ..engine import distributed
from ..engine.device import Precision, resolve_device, resolve_precision
from ..errors import UserError
from ..experiment import ExperimentDir, roots
from ..io_utils import check_writable
from ..provenance import collect
from ..tasks import get_task


@dataclass
class Prepared:
    exp: ExperimentDir
    data_root: Path
    device: torch.device | None = None
    precision: Precision | None = None

    def resolve_device(self, device_flags) -> None:
        """After every input has been checked, so an error is never preceded by device warnings."""
        self.device = resolve_device(device_flags.device_id, device_flags.num_gpu)
        self.precision = resolve_precision(device_flags.amp, device_flags.amp_dtype, self.device)


def prepare(flags) -> Prepared:
    """The experiment folder of a training run (not created yet) and its data root; the class count checked
    against the task."""
    task = get_task(flags.experiment.task)
    data_root, exp_root = roots(flags.paths)
    e = flags.experiment
    exp = ExperimentDir.of(exp_root, e.experiment, e.model, e.task)
    check_writable(exp_root, "--exp_root")
    num_class = flags.classifier.num_class
    if num_class is not None and num_class != task.num_class:
        raise UserError(f"--num_class {num_class}: {task.name} has {task.num_class} classes")
    return Prepared(exp, data_root)


@dataclass
class Start:
    run: bool  # False: this exact run already finished
    resume_step: int | None = None  # continue from this checkpoint
    # fidelity-fix fields the resumed run's config.json lacks, with its old rule (config.LEGACY_FIELDS)
    legacy: dict[str, Any] = field(default_factory=dict)


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
        if entry.name == "config.json":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    shutil.rmtree(exp.log_dir, ignore_errors=True)


def start_experiment(p: Prepared, flags, record: dict, data_files: dict[str, str]) -> Start:
    """Write config.json (after the guard) and decide how to start: a new run, the continuation of a killed
    run with the same config (from its latest checkpoint with a resume state), or nothing when the run
    already finished. ``--overwrite`` with a different config deletes the old run's outputs first.
    Under torchrun rank 0 decides (and writes); every rank follows its decision."""
    start = distributed.broadcast_from_main(lambda: _start_experiment(p, flags, record, data_files))
    if p.device is None:
        p.resolve_device(flags.device)
    return start


def _start_experiment(p: Prepared, flags, record: dict, data_files: dict[str, str]) -> Start:
    from ..engine.checkpoint import resume_steps

    total_step = flags.optimiser.total_step
    old = cfg.guard_experiment(p.exp.config_path, record, flags.paths.overwrite)
    p.resolve_device(flags.device)
    same = old is not None and not cfg.changed_fields(old, record)
    legacy = cfg.legacy_values(old, record) if same else {}
    start = Start(True, legacy=legacy)
    # The resume state is written last at every checkpoint (Trainer.save), and the previous one is deleted only
    # after it: a last checkpoint whose resume state is missing while an older one exists is a run killed while
    # writing it (resumed below). With no resume state at all (deleted to save space), model-{total} means done.
    ready = [s for s in resume_steps(p.exp.path) if p.exp.checkpoint_path(s).is_file()] if same else []
    if same and p.exp.checkpoint_path(total_step).is_file() and (not ready or ready[-1] == total_step):
        print(f"{p.exp.path}: already finished (model-{total_step}.pt exists); nothing to do")
        return Start(False, legacy=legacy)
    if same:
        if ready:
            start = Start(True, ready[-1], legacy)
            print(f"{p.exp.name}: resuming from model-{ready[-1]}.pt (same config; pass --overwrite with "
                  f"another config to start over)", file=sys.stderr)
        elif p.exp.checkpoints():
            print(f"{p.exp.name}: checkpoints {p.exp.checkpoints()} have no resume state; starting over",
                  file=sys.stderr)
        if legacy:
            print(f"{p.exp.name}: started before a fidelity fix ({', '.join(legacy)} not in its config.json): it "
                  f"continues with the rule it started with (doc/methods.md)", file=sys.stderr)
    if old is not None and not same:  # --overwrite: start over, drop every output of the old run
        clear_outputs(p.exp)
    record = {k: v for k, v in record.items() if k not in legacy}  # the config keeps saying which rule runs
    record = dict(record, provenance=collect(p.device, data_files))
    p.exp.path.mkdir(parents=True, exist_ok=True)
    cfg.save_config(p.exp.config_path, record)
    return start
