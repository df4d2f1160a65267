"""Independent references for the skeleton tests: the annotator's drawing and its colours, written out here.

Nothing in this file comes from ``posedreamer_mm``, so a wrong colour order (RGB/BGR), limb table or drawing
order in the package cannot make the tests agree with themselves.
"""
import math

import cv2
import numpy as np

#: The annotator's ``colors`` list, literally (RGB as the ControlNet sees the array): joint k and limb k.
ANNOTATOR_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
#: Colours of the drawn limbs: 0.6 of the colour, truncated (``(canvas * 0.6).astype(np.uint8)``), literally.
LIMB_NECK_RSHOULDER = (153, 0, 0)      # limb 0, [2, 3]: colour (255, 0, 0)
LIMB_RHIP_RKNEE = (0, 153, 51)         # limb 7, [9, 10]: colour (0, 255, 85)
LIMB_NECK_NOSE = (0, 0, 153)           # limb 12, [2, 1]: colour (0, 0, 255)


def controlnet_aux_draw_bodypose(canvas, candidate, subset):
    """``draw_bodypose`` of huggingface/controlnet_aux ``src/controlnet_aux/open_pose/util.py`` (commit
    0a7890e), verbatim but for comments: limbs opaque, whole canvas x 0.6, joints on top.

    ``candidate``: (N, 2) keypoints normalised by (W, H); ``subset``: rows of 18 candidate indices (-1 = none).
    """
    H, W, C = canvas.shape
    candidate = np.array(candidate)
    subset = np.array(subset)

    stickwidth = 4

    limbSeq = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10],
               [10, 11], [2, 12], [12, 13], [13, 14], [2, 1], [1, 15], [15, 17],
               [1, 16], [16, 18], [3, 17], [6, 18]]

    colors = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0], [0, 255, 0],
              [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255], [0, 0, 255], [85, 0, 255],
              [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]

    for i in range(17):
        for n in range(len(subset)):
            index = subset[n][np.array(limbSeq[i]) - 1]
            if -1 in index:
                continue
            Y = candidate[index.astype(int), 0] * float(W)
            X = candidate[index.astype(int), 1] * float(H)
            mX = np.mean(X)
            mY = np.mean(Y)
            length = ((X[0] - X[1]) ** 2 + (Y[0] - Y[1]) ** 2) ** 0.5
            angle = math.degrees(math.atan2(X[0] - X[1], Y[0] - Y[1]))
            polygon = cv2.ellipse2Poly((int(mY), int(mX)), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, colors[i])

    canvas = (canvas * 0.6).astype(np.uint8)

    for i in range(18):
        for n in range(len(subset)):
            index = int(subset[n][i])
            if index == -1:
                continue
            x, y = candidate[index][0:2]
            x = int(x * W)
            y = int(y * H)
            cv2.circle(canvas, (int(x), int(y)), 4, colors[i], thickness=-1)

    return canvas


def disc_centroid(image: np.ndarray, color) -> np.ndarray | None:
    """(u, v) centroid of the pixels of exactly ``color``, or None when there are none."""
    rows, cols = np.nonzero((image == np.asarray(color, np.uint8)).all(-1))
    return None if len(rows) == 0 else np.array([cols.mean(), rows.mean()])
