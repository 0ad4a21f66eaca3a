"""The alignment core: scoring across scales x horizons, the alignment state a(t)."""
