"""Data: image datasets (bundled digits and LFW faces, or local torchvision layouts), text datasets
(bundled pydoc topics and generated records with planted secrets) and their partition across
devices (IID or Dirichlet non-IID), the first stage of the pipeline."""

from .datasets import DATASETS, ImageDataset, load_dataset
from .partitioning import DIRICHLET_RETRIES, PARTITIONS, partition, partition_summary
from .text import TEXT_DATASETS, TextDataset

__all__ = ["ImageDataset", "DATASETS", "load_dataset", "PARTITIONS", "partition", "partition_summary",
           "DIRICHLET_RETRIES", "TextDataset", "TEXT_DATASETS"]
