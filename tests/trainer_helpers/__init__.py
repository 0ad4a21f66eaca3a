"""Helpers for the trainer tests (synthetic corpora, a torchrun runner, probe callbacks)."""
