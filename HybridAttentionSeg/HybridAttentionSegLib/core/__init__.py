"""Pure-Python core engine of HybridAttentionSeg.

No ``slicer``, ``qt``, ``ctk`` or ``vtk`` import is allowed anywhere in this package (a test enforces it).
Axis convention: a :class:`~HybridAttentionSegLib.core.volume.Volume` holds ``data`` as (C, I, J, K) and an
``affine`` mapping IJK voxel indices to RAS millimetres.
"""
