"""Where checkpoints are written: ``model-{step}.pt`` (a plain state_dict of CPU tensors) and, beside the
latest one only, ``resume-{step}.pt`` (optimisers, schedulers, AMP scaler, RNG states, data position, the
method's own state such as LAD gates, the open logging window). Every file is written atomically
(temporary file, flush, rename), so a kill during a save leaves nothing truncated that a later run would
pick up."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from ..errors import UserError
from ..io_utils import atomic_torch_save, remove_inside

if TYPE_CHECKING:
    from ..experiment import ExperimentDir

RESUME_RE = re.compile(r"^resume-(\d+)\.pt$")


def cpu_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_model_checkpoint(module: torch.nn.Module, path: Path) -> None:
    atomic_torch_save(cpu_state_dict(module), path)


def _unreadable_reason(path: Path, error: Exception) -> str:
    """Why torch could not read a checkpoint, in words (torch's own message is its first sentence, with its
    paragraph of advice cut; an OS error number or an empty message says nothing and is described instead)."""
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        return e.strerror or type(e).__name__
    if size == 0:
        return "an empty file, 0 bytes"
    text = (str(error).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
    if isinstance(error, (OSError, EOFError)) or not text or text.startswith("mmap can only be used"):
        return f"truncated or damaged: its {size} bytes do not hold a whole PyTorch checkpoint"
    return text


def read_checkpoint(ckpt_path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A plain state_dict saved by the engine; an unreadable (truncated, foreign) file is a clear error."""
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise UserError(f"{ckpt_path}: not a readable checkpoint ({_unreadable_reason(ckpt_path, e)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{ckpt_path}: not a readable checkpoint (not a state_dict of tensors)")
    return state


def check_fits(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], ckpt_path: Path) -> None:
    """``state`` must have the keys and shapes of the model state ``own`` (position_ids buffers aside)."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong or unexpected or [k for k in missing if not k.endswith("position_ids")]:
        detail = (
            f"shape {tuple(state[wrong[0]].shape)} vs model {tuple(own[wrong[0]].shape)} for {wrong[0]}"
            if wrong
            else f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
        )
        raise UserError(f"{ckpt_path} does not fit the experiment's model ({detail})")


def load_checkpoint_into(model: torch.nn.Module, ckpt_path: Path) -> None:
    """Load a plain state_dict saved by the engine; a checkpoint of another model shape is a clear error."""
    state = read_checkpoint(ckpt_path)
    check_fits(model.state_dict(), state, ckpt_path)
    model.load_state_dict(state, strict=False)


def rng_state(cuda_devices: dict[str, torch.device] | None = None) -> dict[str, Any]:
    """Every RNG state as tensors and plain numbers (loadable with ``weights_only=True``). CUDA generators are
    saved by the *role* of each CUDA device the run uses (``{"student": cuda:1, "teacher": cuda:2}``), not by
    absolute index, so a resume on other indices (or rank k under torchrun) continues the same streams."""
    version, internal, gauss = random.getstate()
    # numpy's stub types the call without arguments as get_state(legacy=False) (a dict); it is legacy=True, and the
    # global MT19937 generator's legacy state is this tuple
    name, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    cuda = {role: torch.cuda.get_rng_state(d) for role, d in (cuda_devices or {}).items() if d.type == "cuda"}
    if cuda:
        state["cuda_by_role"] = cuda
    return state


def set_rng_state(state: dict[str, Any], cuda_devices: dict[str, torch.device] | None = None) -> list[str]:
    """Restore :func:`rng_state`'s states; each CUDA generator goes to the device that now plays its role.
    Returns a note per generator that could not be continued (that device's random stream starts afresh): a role
    saved without a CUDA state (the run was on CPU), or a state saved by absolute index (before states were
    saved by role) that does not fit this machine's devices."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(
        (nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["cached"])
    )
    torch.set_rng_state(state["torch"])
    notes = []
    wanted = {role: d for role, d in (cuda_devices or {}).items() if d.type == "cuda"}
    by_role = state.get("cuda_by_role")
    if by_role is not None or "cuda" not in state:
        for role, d in wanted.items():
            if by_role and role in by_role:
                torch.cuda.set_rng_state(by_role[role], d)
            else:
                notes.append(f"the {role}'s CUDA random stream on {d} starts afresh (the run was saved without one)")
    elif wanted:  # saved by absolute index (torch.cuda.get_rng_state_all) before the states were saved by role
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            notes.append(
                f"the CUDA random streams start afresh (saved for {len(state['cuda'])} devices by index, "
                f"this machine has {torch.cuda.device_count()})"
            )
    return notes


def resume_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"resume-{step}.pt"


def resume_steps(folder: Path) -> list[int]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := RESUME_RE.match(p.name)))


def save_resume_state(folder: Path, step: int, state: dict[str, Any]) -> None:
    """Write ``resume-{step}.pt`` atomically, then drop older resume files (only the latest is kept)."""
    atomic_torch_save(state, resume_path(folder, step))
    for old in resume_steps(folder):
        if old != step:
            remove_inside(resume_path(folder, old), folder)


def prune_checkpoints(exp: ExperimentDir, limit: int, upto: int, keep: int | None, stems: Iterable[str]) -> list[int]:
    """``--save_total_limit``: delete the checkpoints up to step ``upto`` beyond the newest ``limit`` of them
    (``limit`` 0: none), except ``keep`` (the best one of the evaluation during training), each with its method
    files (``{stem}-{step}.pt``). A checkpoint after ``upto`` (left by a killed run, about to be written again) is
    neither counted nor deleted. The method files go first and the model file last, so a kill in between leaves
    a checkpoint that the next call prunes again: any number of calls leave what one call leaves. Returns the
    steps deleted."""
    if not limit:
        return []
    stems = list(stems)
    old = [s for s in exp.checkpoints() if s <= upto][:-limit]
    for step in (s for s in old if s != keep):
        for stem in stems:
            remove_inside(exp.path / f"{stem}-{step}.pt", exp.path)
        remove_inside(exp.checkpoint_path(step), exp.path)
    return [s for s in old if s != keep]


def load_resume_state(folder: Path, step: int, mmap: bool = False) -> dict[str, Any]:
    """``resume-{step}.pt`` (``mmap``: its tensors mapped, not read: for looking at its other entries)."""
    path = resume_path(folder, step)
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        return state
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise UserError(
            f"{path}: not a readable resume state ({str(e).splitlines()[0]}); "
            f"delete it to restart from scratch, or pass --overwrite"
        ) from None
