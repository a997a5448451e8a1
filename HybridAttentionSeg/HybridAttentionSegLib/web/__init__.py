"""The review web app (``hybridseg review``): trame-slicer views of the module's own MRML output, in a browser.

Runs in its own environment (``./run review``; trame-slicer 2.0 needs slicer-core 5.11). ``cases``,
``faithfulness`` and ``session`` import no web framework (``session`` needs slicer-core), so they are tested in the
main environment too; ``views``, ``ui`` and ``app`` need trame.
"""
