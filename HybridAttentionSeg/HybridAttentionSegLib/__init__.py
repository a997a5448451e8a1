"""HybridAttentionSeg library.

``HybridAttentionSegLib.core`` is the pure engine (torch, MONAI, numpy; no slicer/qt/vtk).
The MRML-side Logic is imported lazily so that importing the core never pulls in slicer:

    from HybridAttentionSegLib import HybridAttentionSegLogic   # needs slicer (or slicer-core)
"""

__all__ = ["HybridAttentionSegLogic"]  # noqa: F822 (provided lazily by the module __getattr__ below)


def __getattr__(name):
    if name == "HybridAttentionSegLogic":
        from .mrml.logic import HybridAttentionSegLogic

        return HybridAttentionSegLogic
    message = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(message)
