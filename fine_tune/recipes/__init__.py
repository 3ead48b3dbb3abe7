"""Distillation recipes (issue 33): the YAML or JSON file of loss terms, teachers and layer maps (format.py); the
method that trains from one is fine_tune/methods/recipe.py, its terms fine_tune/methods/terms.py."""
