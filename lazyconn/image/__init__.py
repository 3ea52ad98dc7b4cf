"""Image model: LazyImage, ``load`` and image functions with nilearn's names."""

from lazyconn.image._lazyimage import LazyImage
from lazyconn.image._load import load

__all__ = ["LazyImage", "load"]
