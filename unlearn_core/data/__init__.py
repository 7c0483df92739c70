"""Data layer: the ImageSet type, built-in sets, users' own files, and forget criteria."""

from unlearn_core.data.imageset import ImageSet, channel_stats, stratified_split

__all__ = ["ImageSet", "channel_stats", "stratified_split"]
