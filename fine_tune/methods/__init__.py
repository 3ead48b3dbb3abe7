"""Methods: small objects that turn (batch, student outputs, teacher outputs) into named loss parts.

A method never touches an optimiser or a file; the engine (``fine_tune.engine.trainer``) does.
"""

from .base import Method, ModelOutputs
from .alp import ALPKD
from .lad import LAD, LADNO, PartialLAD
from .layerwise import LayerwiseKD
from .logits_kd import HardLabel, OfflineLogitsKD, logits_kd_loss
from .pkd import PKD

__all__ = ["Method", "ModelOutputs", "HardLabel", "OfflineLogitsKD", "logits_kd_loss", "LayerwiseKD", "LAD", "LADNO",
           "PartialLAD", "ALPKD", "PKD"]
