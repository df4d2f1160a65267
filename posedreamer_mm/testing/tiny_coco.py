"""A tiny COCO-keypoints dataset written on demand: a stand-in for COCO in smoke runs and tests.

Each image holds one stick figure drawn from a jittered COCO-17 skeleton, with its keypoints, box and area in
a standard ``person_keypoints`` json, so mmpose's ``CocoDataset``, ``CocoMetric`` (xtcocotools) and the
Runner run their real code paths on it. It is not COCO and says so in its ``info`` block.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from posedreamer_mm.body.joint_maps import COCO17_NAMES, COCO17_SKELETON

# COCO's category record uses 1-based limb pairs.
COCO17_SKELETON_1BASED = tuple((a + 1, b + 1) for a, b in COCO17_SKELETON)

# A front-facing person in a unit box (x right, y down); the person's left is on the image's right.
_TEMPLATE = np.array([
    [0.50, 0.08], [0.53, 0.06], [0.47, 0.06], [0.57, 0.08], [0.43, 0.08],  # nose, eyes, ears
    [0.64, 0.22], [0.36, 0.22], [0.70, 0.38], [0.30, 0.38], [0.73, 0.53], [0.27, 0.53],  # arms
    [0.59, 0.52], [0.41, 0.52], [0.60, 0.73], [0.40, 0.73], [0.61, 0.94], [0.39, 0.94],  # legs
], dtype=np.float64)


def write_tiny_coco(out_dir: str | Path, num_images: int = 8, img_size: int = 96, seed: int = 0,
                    split: str = 'train') -> Path:
    """Writes ``<out_dir>/images/*.jpg`` and ``<out_dir>/annotations/person_keypoints_<split>.json``.

    Args:
        out_dir: dataset root (created).
        num_images: how many images (one person each).
        img_size: square image side in pixels.
        seed: jitter seed; the same seed writes the same files.
        split: the annotation file's split name.

    Returns:
        The annotation file path.
    """
    out_dir = Path(out_dir)
    (out_dir / 'images').mkdir(parents=True, exist_ok=True)
    (out_dir / 'annotations').mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        scale = img_size * rng.uniform(0.55, 0.8)
        offset = rng.uniform(0.05, 0.95 - scale / img_size, size=2) * img_size
        kpts = _TEMPLATE * scale + offset + rng.normal(0, 0.02 * scale, size=_TEMPLATE.shape)
        img = np.full((img_size, img_size, 3), 40, np.uint8)
        for a, b in COCO17_SKELETON_1BASED:
            pa, pb = kpts[a - 1].round().astype(int), kpts[b - 1].round().astype(int)
            cv2.line(img, tuple(pa), tuple(pb), (200, 180, 160), 2, cv2.LINE_AA)
        for k, p in enumerate(kpts):
            color = (60, 60, 230) if COCO17_NAMES[k].startswith('left') else (230, 90, 60)
            cv2.circle(img, tuple(p.round().astype(int)), 2, color, -1)
        file_name = f'{split}_{i:06d}.jpg'
        cv2.imwrite(str(out_dir / 'images' / file_name), img)
        x0, y0 = kpts.min(0) - 3
        x1, y1 = kpts.max(0) + 3
        images.append(dict(id=i + 1, file_name=file_name, width=img_size, height=img_size))
        flat = np.concatenate([kpts, np.full((17, 1), 2.0)], axis=1).reshape(-1)
        annotations.append(dict(id=i + 1, image_id=i + 1, category_id=1, iscrowd=0, num_keypoints=17,
                                keypoints=[round(float(v), 2) for v in flat],
                                bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                                area=float((x1 - x0) * (y1 - y0))))
    coco = dict(
        info=dict(description='posedreamer_mm tiny COCO-format stand-in (stick figures), not COCO', version='1'),
        images=images, annotations=annotations,
        categories=[dict(id=1, name='person', supercategory='person', keypoints=list(COCO17_NAMES),
                         skeleton=[list(s) for s in COCO17_SKELETON_1BASED])])
    ann_file = out_dir / 'annotations' / f'person_keypoints_{split}.json'
    ann_file.write_text(json.dumps(coco))
    return ann_file
