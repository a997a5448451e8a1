"""MRML side of the module (no Qt; works in Slicer and under slicer-core): Logic, outputs, rendering, demo."""
