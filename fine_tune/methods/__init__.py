"""Methods: small objects that turn (batch, student outputs, teacher outputs) into named loss parts.

A method never touches an optimiser or a file; the engine (``fine_tune.engine.trainer``) does.
"""

from .base import Method, ModelOutputs
from .logits_kd import HardLabel, OfflineLogitsKD, logits_kd_loss

__all__ = ["Method", "ModelOutputs", "HardLabel", "OfflineLogitsKD", "logits_kd_loss"]
