"""What a command shows while it runs: progress bars and its start-up and information lines, on stderr, once per job.

Every bar of the toolkit comes from :func:`progress` (tqdm's, on stderr): training steps, tokenisation, evaluation
passes, logits, predictions, the ONNX export check and speed measurement, downloads (bytes). Every start-up or
information line (``note: ...``, ``warning: ...``, what a run is about to do) goes through :func:`say`. Both speak
for the job from one process:

- under torchrun only rank 0 draws bars and says lines (the other ranks' stdout is silenced by
  :func:`fine_tune.engine.distributed.silence_other_ranks`; errors still reach every rank's stderr). The rank is
  read from torchrun's environment (``RANK`` with ``WORLD_SIZE`` > 1: :func:`torchrun_rank`), never from the process
  group, so asking does not create the group before a command's flags (its timeout) are known;
- ``TQDM_DISABLE`` (set to anything but ``""``, ``0``, ``false``, ``no`` or ``off``) turns every bar off. It is read
  at each bar: tqdm itself (>= 4.66) reads its ``TQDM_*`` variables once, when it is imported, as the defaults of
  its arguments (any non-empty value counting as true), and an explicit ``disable`` overrides them. Hugging Face hub
  downloads draw their own bars (bytes, per file) and pass such a ``disable`` (shown on a terminal): they follow
  ``HF_HUB_DISABLE_PROGRESS_BARS``, which :func:`quiet_other_bars` sets where the toolkit's bars are off.

A leaf: nothing of the toolkit is imported here, and tqdm only when a bar is drawn.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm.auto import tqdm  # (tqdm ships no type information: Any to the checker)

OFF = ("", "0", "false", "no", "off")  # TQDM_DISABLE values that leave the bars on


def torchrun_rank() -> int | None:
    """This process's rank as torchrun's environment gives it, or None outside torchrun (one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        return int(os.environ["RANK"])
    return None


def speaks() -> bool:
    """Whether this process speaks for the job: one process, or rank 0 under torchrun."""
    return torchrun_rank() in (None, 0)


def bars_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` turns the bars off (read now, not at tqdm's import)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in OFF


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | float | None = None,
    desc: str | None = None,
    unit: str = "it",
    enabled: bool = True,
    **options: Any,
) -> tqdm:
    """A tqdm bar on stderr over ``iterable`` (or, without one, updated by hand: ``bar.update(n)``; a context
    manager either way), off where ``enabled`` is false, where ``TQDM_DISABLE`` says so, and on every rank but 0
    under torchrun. ``options`` go to tqdm (``leave``, ``initial``, ``unit_scale``, ``dynamic_ncols``...)."""
    from tqdm.auto import tqdm

    off = not enabled or bars_disabled() or not speaks()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=off, **options)


def quiet_other_bars() -> None:
    """Where the toolkit's bars are off (``TQDM_DISABLE``, a torchrun rank but 0), other libraries' bars too, before
    they draw one: Hugging Face hub downloads pass tqdm a ``disable`` of their own (None: shown on a terminal), which
    overrides ``TQDM_DISABLE``, and follow ``HF_HUB_DISABLE_PROGRESS_BARS`` (read when huggingface_hub is imported;
    told directly where it is imported already); on a rank but 0 tqdm's own ``TQDM_DISABLE`` is set too (read when
    tqdm is imported: ``datasets``' bars). ``run_main`` calls it first (fine_tune/cli.py)."""
    if not bars_disabled() and speaks():
        return
    if not speaks():
        os.environ["TQDM_DISABLE"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    else:
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


def say(message: str) -> None:
    """One start-up or information line on stderr, printed by the process that speaks for the job (rank 0 under
    torchrun) only."""
    if speaks():
        print(message, file=sys.stderr, flush=True)
