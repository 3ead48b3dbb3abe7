"""``--report_to``: the trackers a run reports to, as Hugging Face names them (``tensorboard``, the default;
``mlflow``; ``wandb``; several; ``all``, every one installed; ``none``), behind the engine's one
:class:`~fine_tune.engine.reporting.Reporter` (README.md, "Experiment tracking").

The plan resolves the flag once (:func:`resolve_reporting`: the names checked, each tracker's package imported, so
a missing package is one line before anything is written) into a :class:`Reporting`; the run opens it
(:meth:`Reporting.open`: nothing is written until the reporter starts). Every tracker gets the same scalars under
the same names (TensorBoard's tags), the run's config as parameters and the final metrics. mlflow and wandb are
imported only here, when a run reports to them.

* TensorBoard: the event files in ``<exp_root>/log/<experiment folder>`` (as always); a resumed run drops what a
  killed run logged after its checkpoint (``purge_step``).
* MLflow: ``MLFLOW_TRACKING_URI`` when set, else MLflow's local file store ``<exp_root>/mlruns`` (MLflow 3 keeps
  the file store in maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is set; the toolkit sets it
  for its own default store only: the SQLite store needs SQLAlchemy and Alembic, which mlflow-skinny lacks, and
  takes seconds to create). Experiment: the task's name; run: the experiment folder's name, its id kept in
  ``<experiment folder>/mlflow-run.json``, so a resumed run (and ``run_fine_tune_eval.py``) continues the same
  MLflow run; steps the run already holds are not logged again.
* Weights & Biases: offline (``WANDB_MODE=offline``) unless ``WANDB_API_KEY`` or ``WANDB_MODE`` is set, its files
  in ``<experiment folder>/wandb``; project: the task's name; run: the experiment folder's name (its id kept in
  ``<experiment folder>/wandb-run.json``: a resumed run continues it), group: the folder's name; an evaluation by
  ``run_fine_tune_eval.py`` is a run of its own in that group (W&B keeps a run's steps in increasing order only).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .engine import distributed
from .engine.reporting import FanOut, Reporter
from .errors import UserError
from .io_utils import atomic_write_json
from .settings import REPORT_TO, report_targets

if TYPE_CHECKING:  # the trackers' packages are imported when a run reports to them
    from mlflow.tracking import MlflowClient
    from torch.utils.tensorboard import SummaryWriter
    from wandb.sdk.wandb_run import Run as WandbRun

PACKAGE = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # what each tracker imports
INSTALL = {
    "tensorboard": "pip install tensorboard",
    "mlflow": "pip install mlflow-skinny",
    "wandb": "pip install wandb",
}
MLFLOW_RUN_FILE = "mlflow-run.json"
WANDB_RUN_FILE = "wandb-run.json"


def installed(name: str) -> bool:
    """Whether the tracker's package imports (TensorBoard's, a requirement, is only looked up: it loads when the
    run starts)."""
    if name == "tensorboard":
        return importlib.util.find_spec("tensorboard") is not None
    try:
        importlib.import_module(PACKAGE[name])
    except ImportError:
        return False
    return True


def resolve_reporting(
    value: Any, exp, project: str, job: str = "train", flag: str = "--report_to", source: str = ""
) -> Reporting:
    """``--report_to`` for the experiment ``exp`` (an :class:`~fine_tune.experiment.ExperimentDir`): its names
    checked, ``all`` made the installed trackers, each named tracker's package imported (else one line, before
    anything is written). ``project``: the task's name; ``job``: ``train`` or ``eval``; ``source``: where the value
    came from, for the error line."""
    names = report_targets(value, flag)
    if names == ("all",):
        names = tuple(n for n in REPORT_TO if installed(n))
    for name in names:
        if not installed(name):
            raise UserError(f"{flag} {name}{source} needs the {PACKAGE[name]} package: {INSTALL[name]}")
    return Reporting(names, exp.log_dir, exp.path, exp.root, project, exp.name, job)


@dataclass(frozen=True)
class Reporting:
    """The trackers of one run, resolved: :meth:`open` makes its reporter."""

    backends: tuple[str, ...]  # in REPORT_TO's names; () for none
    log_dir: Path  # TensorBoard's folder
    folder: Path  # the experiment folder (the trackers' run ids, W&B's files)
    exp_root: Path  # MLflow's default local store is under it
    project: str  # the task's name: MLflow's experiment, W&B's project
    run_name: str  # the experiment folder's name
    job: str = "train"  # train | eval (run_fine_tune_eval.py)

    def open(self) -> Reporter:
        """The reporter of this process: every tracker of the run on rank 0, none elsewhere. Nothing is written
        before it starts."""
        if not self.backends or not distributed.is_main():
            return Reporter()
        made = {
            "tensorboard": lambda: TensorBoardReporter(self.log_dir),
            "mlflow": lambda: MLflowReporter(self.folder, self.exp_root, self.project, self.run_name),
            "wandb": lambda: WandbReporter(self.folder, self.project, self.run_name, self.job),
        }
        reporters = [made[name]() for name in self.backends]
        return reporters[0] if len(reporters) == 1 else FanOut(reporters)


# -- TensorBoard -------------------------------------------------------------------------------------------------
class TensorBoardReporter(Reporter):
    """The event files of ``log_dir`` (``torch.utils.tensorboard``)."""

    name = "tensorboard"

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.writer: SummaryWriter | None = None

    def start(self, step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        # purge_step: TensorBoard drops events a killed run wrote after the checkpoint it resumes from (all of them
        # when a run killed before its first complete checkpoint starts over)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=None if step is None else step + 1)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        assert self.writer is not None, "the reporter starts before it logs"
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def log_image(self, tag: str, rgb, step: int) -> None:
        assert self.writer is not None, "the reporter starts before it logs"
        self.writer.add_image(tag, rgb, step, dataformats="HWC")
        self.writer.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self, failed: bool = False) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# -- MLflow ------------------------------------------------------------------------------------------------------
def mlflow_params(config: dict[str, Any], limit: int) -> dict[str, str]:
    """config.json's fields as MLflow parameters: a string as it is, any other value as its JSON (``null``,
    ``true``, ``2e-05``, lists and objects sorted by key); a value longer than MLflow's ``limit`` is cut there,
    ending in ``…`` (the run's ``config.json`` artifact holds it whole)."""
    out = {}
    for key, value in config.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        out[key] = text if len(text) <= limit else text[: limit - 1] + "…"
    return out


def local_store(exp_root: Path) -> str:
    """MLflow's local file store of an experiment root (when ``MLFLOW_TRACKING_URI`` is not set)."""
    return (Path(exp_root) / "mlruns").resolve().as_uri()


@contextmanager
def _file_store_allowed(uri: str):
    """MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set: set while the toolkit's own
    default store is opened (MLflow keeps the store it built), the environment as it was after."""
    if not uri.startswith("file:"):
        yield
        return
    saved = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = saved


class MLflowReporter(Reporter):
    """One MLflow run per experiment folder (its id in ``mlflow-run.json``), through ``MlflowClient`` (no active run
    in the process)."""

    name = "mlflow"

    def __init__(self, folder: Path, exp_root: Path, experiment: str, run_name: str):
        self.folder, self.exp_root, self.experiment, self.run_name = Path(folder), Path(exp_root), experiment, run_name
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.logged: dict[str, int] = {}  # metric -> the last step the run already holds (a resumed run's)
        self.step = 0

    def start(self, step: int | None) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or local_store(self.exp_root)
        with _file_store_allowed(uri):
            self.client = MlflowClient(tracking_uri=uri)
        self.run_id, continued = self._run(uri)
        if continued and step is not None:  # a resumed run: the steps a killed run logged stay, once
            for key in self.client.get_run(self.run_id).data.metrics:
                steps = [m.step for m in self.client.get_metric_history(self.run_id, key)]
                self.logged[key] = max(steps, default=-1)
        self.step = step or 0

    def _run(self, uri: str) -> tuple[str, bool]:
        """The experiment folder's MLflow run (continued, status RUNNING again), or a new one; whether it existed."""
        from mlflow.exceptions import MlflowException

        assert self.client is not None, "start() makes the client first"
        path = self.folder / MLFLOW_RUN_FILE
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                run_id = stored["run_id"]
                if stored.get("tracking_uri") == uri:
                    self.client.update_run(run_id, status="RUNNING")
                    return run_id, True
                why = f"was logged to {stored.get('tracking_uri')}"
            except (ValueError, KeyError, TypeError, MlflowException) as e:
                why = f"cannot be continued ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
            print(f"note: {path}: its MLflow run {why}; starting a new MLflow run in {uri}", file=sys.stderr)
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(self.experiment)
            except MlflowException:  # created meanwhile by another run
                created = self.client.get_experiment_by_name(self.experiment)
                if created is None:  # not that: MLflow's own error
                    raise
                experiment_id = created.experiment_id
        else:
            experiment_id = experiment.experiment_id
        run = self.client.create_run(
            experiment_id, run_name=self.run_name, tags={"fine_tune.experiment_folder": str(self.folder.resolve())}
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"run_id": run.info.run_id, "tracking_uri": uri, "experiment": self.experiment})
        return run.info.run_id, False

    def log_params(self, config: dict[str, Any]) -> None:
        """The config's fields the run does not hold yet (MLflow refuses to change a parameter: a resumed run's
        runtime fields keep their first values), and the whole config as the artifact ``config.json``."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        assert self.client is not None and self.run_id is not None, "the reporter starts before it logs"
        held = self.client.get_run(self.run_id).data.params
        params = [Param(k, v) for k, v in mlflow_params(config, MAX_PARAM_VAL_LENGTH).items() if k not in held]
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + MAX_PARAMS_TAGS_PER_BATCH])
        self.client.log_dict(self.run_id, config, "config.json")

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        assert self.client is not None and self.run_id is not None, "the reporter starts before it logs"
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if step > self.logged.get(k, -1)]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        self.step = max(self.step, step)
        self._log(scalars, step)

    def log_final(self, metrics: dict[str, float]) -> None:
        self.logged = {}  # a final metric is logged whatever the run held (a later evaluation's best replaces it)
        self._log(metrics, self.step)

    def close(self, failed: bool = False) -> None:
        if self.run_id is not None:
            assert self.client is not None, "start() made the client with the run"
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
            self.run_id = None


# -- Weights & Biases --------------------------------------------------------------------------------------------
class WandbReporter(Reporter):
    """A W&B run of the experiment folder (offline unless ``WANDB_API_KEY`` or ``WANDB_MODE`` is set)."""

    name = "wandb"

    def __init__(self, folder: Path, project: str, run_name: str, job: str = "train"):
        self.folder, self.project, self.run_name, self.job = Path(folder), project, run_name, job
        self.run: WandbRun | None = None

    def start(self, step: int | None) -> None:
        import wandb

        path = self.folder / WANDB_RUN_FILE
        run_id = None
        if self.job == "train" and path.is_file():
            try:
                run_id = json.loads(path.read_text(encoding="utf-8"))["id"]
            except (ValueError, KeyError, TypeError):
                run_id = None
        mode: Literal["offline"] | None = (
            None if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") else "offline"
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.project,
            name=self.run_name if self.job == "train" else f"{self.run_name} ({self.job})",
            group=self.run_name,
            job_type=self.job,
            id=run_id,
            resume="allow" if run_id else None,
            dir=str(self.folder),
            mode=mode,
            settings=wandb.Settings(console="off", silent=True),
        )
        if self.job == "train" and run_id is None:
            atomic_write_json(path, {"id": self.run.id, "project": self.project})

    def log_params(self, config: dict[str, Any]) -> None:
        assert self.run is not None, "the reporter starts before it logs"
        self.run.config.update(config, allow_val_change=True)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        assert self.run is not None, "the reporter starts before it logs"
        self.run.log(dict(scalars), step=step)

    def log_final(self, metrics: dict[str, float]) -> None:
        assert self.run is not None, "the reporter starts before it logs"
        self.run.summary.update(metrics)

    def close(self, failed: bool = False) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
