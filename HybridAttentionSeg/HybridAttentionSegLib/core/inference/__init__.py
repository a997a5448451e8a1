"""Inference: volumes and their geometry, file IO, preprocessing to the model grid and back, the engine."""
