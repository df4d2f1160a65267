"""A contact sheet of a generated dataset: per sample its image, the image with the label's skeleton, its controls.

The skeleton column is the check a reader makes at a glance: the COCO-17 keypoints of the label
(``visualization.draw.draw_coco17``: hollow = occluded) must sit on the person in the generated image.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from posedreamer_mm.utils.fileio import atomic_write_bytes

from .draw import draw_coco17


def make_contact_sheet(reader, path: str | os.PathLike, max_rows: int = 8, tile: int = 192,
                       controls: bool = True) -> str:
    """Writes a PNG contact sheet of the first ``max_rows`` samples of a ``GeneratedDataReader``.

    Args:
        reader: A :class:`~posedreamer_mm.generation.reader.GeneratedDataReader` (or anything with its API).
        path: Output PNG (written atomically).
        max_rows: Samples shown, one per row.
        tile: Side of each square tile, pixels.
        controls: Also show each sample's stored control images.

    Returns:
        ``path``.

    Raises:
        ValueError: the dataset has no samples.
    """
    n = min(len(reader), max_rows)
    if n == 0:
        raise ValueError(f'{reader!r} has no samples: nothing to show')
    types = list(reader.meta(0)['controls']) if controls else []
    rows, captions = [], []
    for r in range(n):
        img, label = reader.load_image(r), reader.sample(r)
        overlay = draw_coco17(img, label.keypoints_coco17, radius=max(2, img.shape[0] // 128))
        tiles = [img, overlay]
        for ctype in types:
            ctrl = cv2.imread(reader.control_path(r, ctype), cv2.IMREAD_COLOR)
            tiles.append(cv2.cvtColor(ctrl, cv2.COLOR_BGR2RGB) if ctrl is not None else np.zeros_like(img))
        rows.append(tiles)
        captions.append(reader.ids[r][-26:])
    sheet = tile_sheet(rows, ['image', 'image + label keypoints'] + types, captions, tile)
    ok, buf = cv2.imencode('.png', cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError('could not encode the contact sheet')
    atomic_write_bytes(path, buf.tobytes())
    return os.fspath(path)


def tile_sheet(rows: list[list[np.ndarray]], columns: list[str], captions: list[str], tile: int = 192) -> np.ndarray:
    """Lays out rows of RGB images as a grid of square tiles under a header of column names.

    Args:
        rows: one list of ``(H, W, 3)`` uint8 RGB images per row, one per column (any sizes: each is resized).
        columns: the header's column names.
        captions: one caption per row, written at the bottom left of its first tile.
        tile: side of each square tile, pixels.

    Returns:
        ``(28 + tile * len(rows), tile * len(columns), 3)`` uint8 RGB.
    """
    header = 28
    sheet = np.zeros((header + tile * len(rows), tile * len(columns), 3), np.uint8)
    for c, name in enumerate(columns):
        cv2.putText(sheet, name, (c * tile + 6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    for r, (tiles, caption) in enumerate(zip(rows, captions)):
        y0 = header + r * tile
        for c, t in enumerate(tiles):
            sheet[y0:y0 + tile, c * tile:(c + 1) * tile] = cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, caption, (4, y0 + tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (230, 230, 230), 1,
                    cv2.LINE_AA)
    return sheet
