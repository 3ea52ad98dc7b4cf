"""Region extraction with nilearn's names: ``RegionExtractor``, ``connected_regions``,
``connected_label_regions`` and the ``img_to_signals_*`` / ``signals_to_img_*`` functions.

Maps and labels images are small and are processed in memory (identical regions to
nilearn's); signals are extracted from runs lazily, one pass over each run's chunks.
"""

from lazyconn.regions.region_extractor import (
    RegionExtractor,
    connected_label_regions,
    connected_regions,
)
from lazyconn.regions.signal_extraction import (
    img_to_signals_labels,
    img_to_signals_maps,
    signals_to_img_labels,
    signals_to_img_maps,
)

__all__ = [
    "RegionExtractor",
    "connected_label_regions",
    "connected_regions",
    "img_to_signals_labels",
    "img_to_signals_maps",
    "signals_to_img_labels",
    "signals_to_img_maps",
]
