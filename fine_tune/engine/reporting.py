"""What the engine and the evaluation report to: one :class:`Reporter`, whatever trackers stand behind it.

The engine knows no tracker: it receives a reporter (``fine_tune/reporting.py`` builds one from ``--report_to``:
TensorBoard, MLflow, Weights & Biases, several through :class:`FanOut`) and calls

* :meth:`Reporter.start` once, with the step the run starts from (a resumed run's checkpoint; 0 for a new run;
  None for a script that trains nothing): what a killed run logged after that step is the resumed run's to log
  again, and a tracker drops (TensorBoard) or keeps (MLflow) the copy it already has, so every step is there once;
* :meth:`Reporter.log_params` with the run's config (``config.json``'s content);
* :meth:`Reporter.log_scalars` with ``{name: value}`` at a step (the names: TensorBoard's tags, the same for every
  tracker: README.md, "TensorBoard tags");
* :meth:`Reporter.log_image` (an RGB array; trackers that keep no images ignore it);
* :meth:`Reporter.log_final` with the run's final metrics (the evaluation's best values, the training's summary);
* :meth:`Reporter.flush` at each checkpoint (what was logged so far is stored before the run can resume from it)
  and :meth:`Reporter.close` at the end (``failed``: the run ended with an error).

The base class reports nothing (``--report_to none``, ranks other than 0 under torchrun)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class Reporter:
    """Reports nothing; each tracker's backend overrides what it keeps."""

    name = "none"

    def start(self, step: int | None) -> None:
        pass

    def log_params(self, config: dict[str, Any]) -> None:
        pass

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        pass

    def log_image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        pass

    def log_final(self, metrics: dict[str, float]) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        pass


class FanOut(Reporter):
    """Several trackers as one: each call goes to every one of them, in order; :meth:`close` closes every one even
    when one of them fails (the first failure is raised after)."""

    name = "fan-out"

    def __init__(self, reporters: Sequence[Reporter]):
        self.reporters = list(reporters)

    def start(self, step: int | None) -> None:
        for r in self.reporters:
            r.start(step)

    def log_params(self, config: dict[str, Any]) -> None:
        for r in self.reporters:
            r.log_params(config)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for r in self.reporters:
            r.log_scalars(scalars, step)

    def log_image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        for r in self.reporters:
            r.log_image(tag, rgb, step)

    def log_final(self, metrics: dict[str, float]) -> None:
        for r in self.reporters:
            r.log_final(metrics)

    def flush(self) -> None:
        for r in self.reporters:
            r.flush()

    def close(self, failed: bool = False) -> None:
        error = None
        for r in self.reporters:
            try:
                r.close(failed)
            except Exception as e:  # noqa: BLE001  (the others still close; the first failure is raised)
                error = error or e
        if error is not None:
            raise error
