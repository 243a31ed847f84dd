"""Data: the registry of real data sets, fetching with hashes checked, loaders, and embedded defaults."""

from mmhelpers.data.asterisk import SpokenPrompts, load_asterisk_prompts
from mmhelpers.data.embedded import load_digit_images, load_sample_photos, load_synthetic_spoken_digits
from mmhelpers.data.fetch import fetch, verify_file
from mmhelpers.data.flickr8k import CaptionedImages, load_flickr8k, load_flickr8k_all_captions
from mmhelpers.data.fsdd import SpokenDigits, load_fsdd
from mmhelpers.data.idx import read_idx
from mmhelpers.data.mnist import FASHION_CLASSES, ImageSet, load_fashion_mnist, load_mnist
from mmhelpers.data.registry import REGISTRY, DataSet, FileSpec, get_dataset

__all__ = [
    "REGISTRY", "CaptionedImages", "DataSet", "FASHION_CLASSES", "FileSpec", "ImageSet", "SpokenDigits",
    "SpokenPrompts", "fetch", "get_dataset", "load_asterisk_prompts", "load_digit_images", "load_fashion_mnist",
    "load_flickr8k", "load_flickr8k_all_captions", "load_fsdd", "load_mnist", "load_sample_photos",
    "load_synthetic_spoken_digits", "read_idx", "verify_file",
]  # fmt: skip
