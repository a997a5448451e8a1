"""Qt side of the module (inside Slicer only): panels, parameter node, dependency installer, card HTML."""
