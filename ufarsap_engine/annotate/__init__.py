"""Scoring the corpus once (the short horizon): ``annotate`` writes every selected plugin's
scores and flagged spans as dataset columns with provenance; the reader hands them to training.

- :func:`annotate` (``ufarsap-engine annotate``): parallel, batched, incremental, resumable.
- :func:`load_annotations`, :func:`check_annotations`: read an annotation back as a
  ``datasets.Dataset``, or say in one line why it cannot serve a plugin list.
- :func:`plugin_columns`: the column names of one plugin.
Layout and guarantees: :mod:`ufarsap_engine.annotate.manifest`; columns:
:mod:`ufarsap_engine.annotate.columns`.
"""

from ufarsap_engine.annotate.columns import plugin_columns
from ufarsap_engine.annotate.pipeline import annotate
from ufarsap_engine.annotate.reader import check_annotations, load_annotations

__all__ = ["annotate", "check_annotations", "load_annotations", "plugin_columns"]
