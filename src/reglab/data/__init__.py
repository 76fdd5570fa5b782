"""Datasets as uint8 tensors in memory, split/subset/fold by index, batched by index.

Every dataset is read once into ``(N, C, H, W)`` uint8 images and int64 labels. The training path
never touches a per-sample ``__getitem__``: a batch is ``images[idx]`` for a tensor of indices.
Floating point conversion, augmentation and normalization happen on the training device, in the
LitModule (see ``reglab.training.module``).

    formats.py   file formats: IDX, CIFAR pickles (restricted unpickler), PIL images, md5
    sources.py   where each dataset comes from: the registry, torchvision classes, image folders
                 (start here to add a dataset)
    splits.py    train/val split, k folds, balanced subsets (by data.split_seed)
    batches.py   Split (tensors in memory) and IndexBatches (batches by index)
    module.py    DataModule: the data config's owner, and what Lightning calls
"""

from reglab.data.batches import IndexBatches, Split
from reglab.data.formats import read_idx
from reglab.data.module import DataModule
from reglab.data.sources import REGISTRY, SYSTEM_FASHION_MNIST, load_dataset
from reglab.data.splits import balanced_subset, split_indices

__all__ = [
    "REGISTRY",
    "SYSTEM_FASHION_MNIST",
    "DataModule",
    "IndexBatches",
    "Split",
    "balanced_subset",
    "load_dataset",
    "read_idx",
    "split_indices",
]
