"""The one training engine (AMP, accumulation, clipping, schedules, checkpoints, logging) and its helpers."""
