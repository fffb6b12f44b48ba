"""Files -> datasets (one type, with class names and a data spec) -> transforms -> batches."""

from imgzoo.data.datasets import ImageDataset, check_classes
from imgzoo.data.loaders import batches

__all__ = ["ImageDataset", "batches", "check_classes"]
