"""Data transforms: crops, flips, augmentation, packing, and filter stages."""
