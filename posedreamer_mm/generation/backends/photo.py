"""The photo backend: the image of a pair is the source's own photo, cropped by the crop camera of its controls.

With it the generator writes control-model training pairs (control, photo, caption) from labelled photos in the
project's sharded dataset format (docs/control_pairs.md); reader, resume and ``dist_generate.sh`` apply unchanged.
The photo is read and cropped in the workers by :class:`~posedreamer_mm.generation.photo_pairs.LoadPhotoCrop`
(an unreadable photo is a counted drop there, not a stopped run); this backend hands that crop on.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from posedreamer_mm.registry import BACKENDS

from .base import BaseGenerationBackend


@BACKENDS.register_module()
class PhotoCropBackend(BaseGenerationBackend):
    """Returns each sample's photo crop (``results['photo']``) as its generated image.

    The crop was made with the crop camera of ``BodyCropCamera`` (the one every control is rendered at), so
    control and image align pixel for pixel.

    Args:
        batch_size: Samples per :meth:`generate` call (only groups them; nothing is computed here).
    """

    name = 'photo_crop'
    control_types: list[str] = []

    def __init__(self, batch_size: int = 16) -> None:
        super().__init__(batch_size)

    def generate(self, batch: list[dict]) -> list[np.ndarray]:
        h, w = self.check_batch(batch)
        images = []
        for results in batch:
            photo = results.get('photo')
            if photo is None:
                raise ValueError(f'PhotoCropBackend: sample {results["sample"].id!r} has no results["photo"]: add '
                                 "dict(type='LoadPhotoCrop') to the pipeline after BodyCropCamera")
            photo = np.asarray(photo)
            if photo.shape != (h, w, 3) or photo.dtype != np.uint8:
                raise ValueError(f'PhotoCropBackend: the photo crop of {results["sample"].id!r} is {photo.shape} '
                                 f'{photo.dtype}, expected ({h}, {w}, 3) uint8 at the crop camera')
            images.append(photo)
        return images

    def record(self) -> dict[str, Any]:
        return {**super().record(), 'kind': 'the source photo cropped by the controls\' crop camera (not generated)'}
