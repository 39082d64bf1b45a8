"""Attention models, weighted loss, trainer, evaluation, error decomposition, reports."""
