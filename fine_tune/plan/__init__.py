"""The run plan: parsed flags resolved once into what a run needs (fine_tune/plan/inference.py: the scripts that use a trained experiment)."""
