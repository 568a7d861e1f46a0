"""CIFAR-10 loading (every common format), splits, statistics, batch augmentation and a loader."""
from minitorch_cifar.data.cifar import (CLASSES, CIFAR10, DataError, Split, channel_stats, default_root,
                                        download_cifar10, formats_help, load_cifar10, random_subset,
                                        train_val_split)
from minitorch_cifar.data.loader import BatchLoader
from minitorch_cifar.data.transforms import Augment, cutout, normalize, random_crop, random_flip
