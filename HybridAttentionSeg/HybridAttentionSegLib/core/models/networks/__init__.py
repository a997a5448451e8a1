"""Custom hybrid networks composed from MONAI blocks (no slicer/qt imports)."""

from .cnn_self_attention import CNNSelfAttention3D
from .transunet import TransUNet3D

__all__ = ["CNNSelfAttention3D", "TransUNet3D"]
