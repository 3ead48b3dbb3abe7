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
"""

from __future__ import annotations

import torch


class WidthProjection(torch.nn.Module):
    def __init__(self, student_width: int, teacher_width: int, count: int, shared: bool = False):
        super().__init__()
        self.shared = shared
        self.maps = torch.nn.ModuleList(torch.nn.Linear(student_width, teacher_width)
                                        for _ in range(1 if shared else count))
        for m in self.maps:
            torch.nn.init.normal_(m.weight, std=0.02)
            torch.nn.init.zeros_(m.bias)

    def forward(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden`` of student layer ``layer`` (1-based; 0: the embeddings, shared maps only) in the teacher's
        width."""
        return self.maps[0 if self.shared else layer - 1](hidden)
