"""Distillation recipes: a method composed of loss terms from a file."""
