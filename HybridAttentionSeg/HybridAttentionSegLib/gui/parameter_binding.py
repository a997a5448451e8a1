"""One GUI connection per MRML parameter node, however often the module is entered and left.

Slicer's template connects the panel to a *new* parameter-node wrapper on every enter and disconnects it on
every exit. In Slicer 5.10, ``connectGui`` adds a ``ModifiedEvent`` observer that ``disconnectGui`` never
removes (``parameterNodeWrapper/wrapper.py`` at v5.10.0; fixed by Slicer commit 16069d367e for 5.12), so each
module switch leaked observers (and the widgets they hold). :class:`ParameterNodeBinding` connects once per
MRML node: entering again with a new wrapper of the same node changes nothing, and the connection is only
dropped when the node itself goes (scene close) or the module is cleaned up.

Qt-free (the connect/disconnect functions are passed in), so it is tested under slicer-core.
"""

from __future__ import annotations

from collections.abc import Callable


def mrmlNode(wrapper):
    """The MRML node behind a ``parameterNodeWrapper`` instance (None for None)."""
    return getattr(wrapper, "parameterNode", None) if wrapper is not None else None


class ParameterNodeBinding:
    """Keeps the panel connected to one parameter node.

    Args:
        connect: ``connect(wrapper) -> tags`` (binds the widgets, returns what ``disconnect`` needs).
        disconnect: ``disconnect(wrapper, tags)``.
    """

    def __init__(self, connect: Callable, disconnect: Callable):
        self._connect = connect
        self._disconnect = disconnect
        self.wrapper = None
        self._tags = None

    def bind(self, wrapper) -> bool:
        """Connect ``wrapper`` (None: disconnect). Returns False, doing nothing, when its MRML node is the one
        already connected (the first wrapper stays in use)."""
        if mrmlNode(wrapper) is mrmlNode(self.wrapper):
            return False
        if self.wrapper is not None:
            self._disconnect(self.wrapper, self._tags)
        self.wrapper, self._tags = wrapper, None
        if wrapper is not None:
            self._tags = self._connect(wrapper)
        return True
