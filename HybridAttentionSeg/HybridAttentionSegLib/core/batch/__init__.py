"""Cohort inference (``hybridseg segment-batch``): many cases, one resident model per worker, on Ray.

:mod:`.cohort` finds the cases (a folder or a list file), gives each a unique output stem and tells which are
already finished; :mod:`.worker` is the per-worker object (one :class:`~..inference.engine.Segmenter`, cases
through :mod:`..inference.case`, the code path of ``hybridseg segment``); :mod:`.runner` runs the workers as
Ray actors (imported lazily: nothing here imports ``ray`` at module level); :mod:`.summary` writes
``summary.csv``.
"""
