"""Experiments on Ray (``hybridseg experiment``): the review's grid of CNN, self- and cross-attention variants.

:mod:`.review` runs a grid from parsed options to its outputs; :mod:`.variants` says which networks and
settings, :mod:`.demo_data` and :mod:`.msd` prepare the data (:mod:`.datasets`), :mod:`.runner` runs the
trials (:mod:`.trial`) on Ray, and :mod:`.metrics`, :mod:`.tables`, :mod:`.plots` and :mod:`.report` turn
their results into ``results.csv``, ``summary.csv`` and ``report.md``.
"""
