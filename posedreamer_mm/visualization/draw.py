"""Drawing helpers shared by figures, contact sheets and reports: COCO-17 skeletons (more join as stages land)."""
from __future__ import annotations

import cv2
import numpy as np

from posedreamer_mm.body.joint_maps import COCO17_NAMES, COCO17_SKELETON


def draw_coco17(image: np.ndarray, keypoints: np.ndarray, radius: int = 3) -> np.ndarray:
    """Draws COCO-17 keypoints (17, 3) on an RGB image: person's left orange, right blue, centre green.

    Occluded keypoints (visibility 1) are drawn hollow; those outside the image (0) are not drawn.
    """
    out = image.copy()

    def color(name: str) -> tuple[int, int, int]:
        return (255, 140, 0) if name.startswith('left') else (30, 120, 255) if name.startswith('right') \
            else (0, 200, 0)

    for a, b in COCO17_SKELETON:
        if keypoints[a, 2] > 0 and keypoints[b, 2] > 0:
            cv2.line(out, tuple(np.round(keypoints[a, :2]).astype(int)), tuple(np.round(keypoints[b, :2]).astype(int)),
                     color(COCO17_NAMES[b]), 2, cv2.LINE_AA)
    for k, (x, y, v) in enumerate(keypoints):
        if v > 0:
            cv2.circle(out, (int(round(x)), int(round(y))), radius, color(COCO17_NAMES[k]), -1 if v >= 2 else 1,
                       cv2.LINE_AA)
    return out
