"""Distillation recipes (issue 33): a YAML or JSON file of loss terms, teachers and layer maps (format.py)."""
