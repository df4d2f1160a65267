"""COCO-format keypoint annotations of a generated dataset, so mmpose users can train 2D models on it.

``export_coco_keypoints(reader, 'outputs/run/coco_keypoints.json')`` writes one image and one person annotation per
sample (``file_name`` relative to the dataset root; mmpose's ``CocoDataset`` with ``data_prefix=dict(img='')`` and
``data_root`` = the dataset root reads it). Keypoints are the label's COCO-17 points with COCO visibility (2
visible, 1 occluded, 0 outside the image: then x = y = 0, as COCO stores unlabelled points); ``bbox`` is the
projected mesh's box clipped to the image.
"""
from __future__ import annotations

import json
import os

import numpy as np

from posedreamer_mm.body.joint_maps import COCO17_NAMES, COCO17_SKELETON
from posedreamer_mm.utils.fileio import atomic_write_text

from .reader import GeneratedDataReader


def coco_keypoints_dict(reader: GeneratedDataReader) -> dict:
    """The COCO keypoints dict (``images``, ``annotations``, ``categories``) of every sample of ``reader``."""
    images, annotations = [], []
    for i in range(len(reader)):
        sample, meta = reader.sample(i), reader.meta(i)
        w, h = (int(v) for v in sample.img_size)
        kp = np.asarray(sample.keypoints_coco17, np.float64).copy()
        kp[kp[:, 2] == 0, :2] = 0.0
        x, y, bw, bh = (float(v) for v in sample.bbox)
        x0, y0 = min(max(x, 0.0), w), min(max(y, 0.0), h)
        x1, y1 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
        images.append(dict(id=i + 1, file_name=meta['image'], width=w, height=h, sample_id=sample.id))
        annotations.append(dict(id=i + 1, image_id=i + 1, category_id=1, iscrowd=0,
                                keypoints=[round(float(v), 3) for v in kp.reshape(-1)],
                                num_keypoints=int((kp[:, 2] > 0).sum()),
                                bbox=[round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
                                area=round((x1 - x0) * (y1 - y0), 3)))
    categories = [dict(id=1, name='person', supercategory='person', keypoints=list(COCO17_NAMES),
                       skeleton=[[a + 1, b + 1] for a, b in COCO17_SKELETON])]
    return dict(info=dict(description=f'posedreamer_mm generated dataset {reader.root}'), images=images,
                annotations=annotations, categories=categories)


def export_coco_keypoints(reader: GeneratedDataReader | str | os.PathLike, out_file: str | os.PathLike) -> str:
    """Writes :func:`coco_keypoints_dict` to ``out_file`` (atomically); returns its path."""
    if not isinstance(reader, GeneratedDataReader):
        reader = GeneratedDataReader(reader)
    atomic_write_text(out_file, json.dumps(coco_keypoints_dict(reader)))
    return os.fspath(out_file)
