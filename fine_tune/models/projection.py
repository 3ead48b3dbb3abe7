"""The learned width projection of layer-wise distillation between models of different widths.

Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding", Findings of EMNLP 2020, eq. (8):
a student hidden state is compared with the teacher's through a learned linear map into the teacher's width::

    L_hidn = MSE(H_s W_h, H_t),   W_h in R^{d_s x d_t}   (here with a bias: h W_h + b)

:class:`WidthProjection` holds either one map per matched student layer (``shared=False``: LAD, LAD-NO, partial
LAD, ALP-KD, BERT-PKD; each student layer then matches a different teacher-space target, as TextBrewer's per-match
``proj``) or one map shared by every layer and the embeddings (``shared=True``: TinyBERT's single W_h, as its
released code's ``fit_dense``). Weights ~ N(0, 0.02), biases 0 (BERT's initialisation, as TinyBERT's). The
projection trains with the student's optimiser settings, is saved beside each checkpoint
(``projection-{step}.pt``) and in the resume state, and is not part of the exported student.

A pretrained student may bring its own shared projection in its weights file (General TinyBERT's checkpoints hold
their trained ``fit_dense``, a ``Linear(student width, 768)``): :func:`read_pretrained_projection` finds it
(:class:`PretrainedProjection`), and the method starts its projection from it instead of N(0, 0.02).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError


class WidthProjection(torch.nn.Module):
    def __init__(self, student_width: int, teacher_width: int, count: int, shared: bool = False) -> None:
        super().__init__()
        self.shared = shared
        maps = [torch.nn.Linear(student_width, teacher_width) for _ in range(1 if shared else count)]
        for m in maps:
            torch.nn.init.normal_(m.weight, std=0.02)
            torch.nn.init.zeros_(m.bias)
        self.maps = torch.nn.ModuleList(maps)

    def forward(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden`` of student layer ``layer`` (1-based; 0: the embeddings, shared maps only) in the teacher's
        width."""
        return self.maps[0 if self.shared else layer - 1](hidden)


@dataclass(frozen=True, eq=False)
class PretrainedProjection:
    """A linear map ``hidden @ weight.T + bias`` found in a pretrained student's weights ``file`` under the keys
    ``{prefix}weight`` / ``{prefix}bias`` (``bias`` None when the file holds no bias)."""

    file: Path
    prefix: str
    weight: torch.Tensor
    bias: torch.Tensor | None

    def check(self, student_width: int, teacher_width: int, what: str, remedy: str = "") -> None:
        """Refuse (one line naming the file and both shapes) a map that is not ``[teacher_width, student_width]``
        with a bias of ``[teacher_width]``; ``what`` names the projection it would start, ``remedy`` (appended
        after a semicolon) the way around it."""
        for part, tensor in (("weight", self.weight), ("bias", self.bias)):
            if tensor is not None and not bool(torch.isfinite(tensor).all()):
                raise UserError(
                    f"{self.file}: {self.prefix}{part} holds values that are not finite (NaN or "
                    f"infinite): it cannot start {what}"
                )
        need_w, need_b = (teacher_width, student_width), (teacher_width,)
        have_w = tuple(self.weight.shape)
        have_b = None if self.bias is None else tuple(self.bias.shape)
        if have_w != need_w or have_b != need_b:
            bias = "missing" if have_b is None else list(have_b)
            raise UserError(
                f"{self.file}: {self.prefix}weight {list(have_w)} and {self.prefix}bias {bias} cannot "
                f"start {what}, which maps the student's width {student_width} to the teacher's "
                f"{teacher_width}: it needs {list(need_w)} and {list(need_b)}" + (f"; {remedy}" if remedy else "")
            )

    def copy_to(self, linear: torch.nn.Linear) -> None:
        """Set ``linear``'s weight and bias to this map's values (in the parameters' dtype and device)."""
        with torch.no_grad():
            linear.weight.copy_(self.weight)
            assert self.bias is not None  # check() refuses a map without a bias before it starts a projection
            linear.bias.copy_(self.bias)


# Where a weights file may hold a projection named NAME: at the top level (TinyBERT's released
# ``TinyBertForSequenceClassification`` saves ``fit_dense.weight``), or under a DataParallel wrapper's ``module.``
# or BERT's ``bert.``; the first present, in this order, is taken.
PROJECTION_PREFIXES = ("", "module.", "bert.")


def read_pretrained_projection(source: str, name: str, flag: str) -> PretrainedProjection | None:
    """The projection ``name`` (e.g. ``fit_dense``) held by the weights of the pretrained model ``source`` (a local
    folder: the file Hugging Face would load, safetensors or ``pytorch_model.bin``, every shard of a sharded one; a
    hub name: the same files from the hub's cache, downloaded as loading the model would), or None when they hold
    none. Only those tensors are read (safetensors; a zip-format PyTorch file through a memory map). ``flag`` names
    the source in the error for an unreadable file. A sharded model may hold the weight and the bias in different
    shards: every shard is read."""
    from .classifier import pretrained_weight_files, weights_error

    wanted = [f"{prefix}{name}." for prefix in PROJECTION_PREFIXES]
    found: dict[str, tuple[Path, torch.Tensor]] = {}  # key -> (the file holding it first, its tensor)
    for path in pretrained_weight_files(source, flag):
        try:
            tensors = _read_tensors(path, tuple(p + part for p in wanted for part in ("weight", "bias")))
        except UserError:  # its own one line (not a state_dict)
            raise
        except Exception as e:  # noqa: BLE001 - safetensors' or torch's own error
            raise weights_error(f"{flag} {source!r}", path, e) from None
        for key, tensor in tensors.items():
            found.setdefault(key, (path, tensor))
    for prefix in wanted:
        if prefix + "weight" in found:
            path, weight = found[prefix + "weight"]
            bias = found.get(prefix + "bias")
            return PretrainedProjection(path, prefix, weight, None if bias is None else bias[1])
    return None


def _read_tensors(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of ``keys`` that the weights file ``path`` holds (float32 copies)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            present = set(f.keys())
            return {k: f.get_tensor(k).float().clone() for k in keys if k in present}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (pre-1.6, not zip) format cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a state_dict of tensors")
    return {k: state[k].float().clone() for k in keys if isinstance(state.get(k), torch.Tensor)}
