"""Image loading for the HMR pipelines, with the dataset's bad-image policy (docs/hmr_data.md)."""
from __future__ import annotations

import logging
import os.path as osp

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from posedreamer_mm.registry import TRANSFORMS


class HMRImageError(FileNotFoundError):
    """A missing, unreadable or mis-sized image of an HMR sample (the message names the file)."""


def scale_labels_2d(results: dict, scale: float) -> None:
    """Rescales the 2D labels of ``results`` in place for an image stored ``scale`` x the labels' size (pixel
    centres at integers: ``u' = (u + 0.5) * scale - 0.5``)."""
    shift = 0.5 * (scale - 1.0)
    results['focal'] = np.asarray(results['focal'], np.float32) * scale
    results['princpt'] = np.asarray(results['princpt'], np.float32) * scale + shift
    results['bbox'] = np.asarray(results['bbox'], np.float32) * scale + shift
    kpts = np.array(results['keypoints_coco17'], np.float32, copy=True)
    kpts[:, :2] = kpts[:, :2] * scale + shift
    results['keypoints_coco17'] = kpts


@TRANSFORMS.register_module()
class LoadHMRImage(BaseTransform):
    """Loads ``img_path`` as an RGB uint8 image (docs/conventions.md: ``img`` is RGB in every pipeline).

    Bad images follow the dataset's mode (``results['test_mode']``, set by the HMR datasets; absent = test mode):
    in test mode a missing/unreadable image raises :class:`HMRImageError` naming the file; in training the
    sample is dropped (``None``, mmengine draws another) and counted (:attr:`num_skipped`, a WARNING per drop
    with the running count of this process).

    An image stored at another resolution than its labels (``img_shape_full``) with the same aspect ratio (within
    1 %, e.g. BEDLAM at half resolution) has its 2D labels (camera, box, keypoints) rescaled; a different
    aspect ratio is a bad image.

    Required Keys:
        - img_path, img_shape_full, focal, princpt, bbox, keypoints_coco17

    Modified Keys:
        - img_shape_full, focal, princpt, bbox, keypoints_coco17 (only when rescaled)

    Added Keys:
        - img ((H, W, 3) uint8 RGB), img_shape ((H, W)), ori_shape ((H, W))
    """

    def __init__(self):
        self.num_skipped = 0

    def _read(self, path: str) -> np.ndarray:
        if not osp.isfile(path):
            raise HMRImageError(f'image {path!r} not found')
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise HMRImageError(f'image {path!r} cannot be decoded (truncated or not an image?)')
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def transform(self, results: dict) -> dict | None:
        path = results['img_path']
        try:
            img = self._read(path)
            h, w = img.shape[:2]
            lh, lw = (int(v) for v in results['img_shape_full'])
            if (h, w) != (lh, lw):
                scale = w / lw
                if abs(h / lh - scale) > 0.01 * scale:
                    raise HMRImageError(f'image {path!r} is {w}x{h} but its labels are for {lw}x{lh} '
                                        '(different aspect ratio: wrong image for this label?)')
                scale_labels_2d(results, scale)
                results['img_shape_full'] = np.array([h, w], np.int64)
        except HMRImageError as err:
            if results.get('test_mode', True):
                raise
            self.num_skipped += 1
            print_log(f'LoadHMRImage: skipped sample {results.get("id")!r}: {err} ({self.num_skipped} skipped so '
                      'far in this process)', logger='current', level=logging.WARNING)
            return None
        results['img'] = img
        results['img_shape'] = results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'
