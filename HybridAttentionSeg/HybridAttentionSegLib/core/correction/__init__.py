"""Correction: live threshold, click refinement, uncertain regions, simulated-click evaluation (pure numpy)."""
