"""The filter report: kept/rejected per stage, the OKS histogram, and contact sheets with the label drawn over.

``tools/filter.py`` (``posedreamer_mm/apis/filter.py``) calls :func:`save_filter_report`; the sheets draw each
label's COCO-17 skeleton with :func:`posedreamer_mm.visualization.draw_coco17`, so a reader sees whether the image
follows its label and why a sample was rejected.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence

import cv2
import numpy as np

from posedreamer_mm.utils.fileio import atomic_write_bytes

from .draw import draw_coco17


def labelled_tile(img: np.ndarray, keypoints: np.ndarray, caption: Sequence[str], tile: int = 192) -> np.ndarray:
    """One ``(tile + 28, tile, 3)`` uint8 RGB tile: the image letterboxed to ``tile``, the label skeleton over it,
    up to two caption lines below.

    Args:
        img: ``(H, W, 3)`` uint8 RGB.
        keypoints: ``(17, 3)`` label keypoints in ``img`` pixels with visibility (0 = not drawn).
        caption: up to two lines of text under the tile (each cut to fit).
        tile: tile side, pixels.
    """
    h, w = img.shape[:2]
    drawn = draw_coco17(img, keypoints, radius=max(2, round(max(h, w) / tile * 2)))
    scale = tile / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((tile + 28, tile, 3), np.uint8)
    y0, x0 = (tile - nh) // 2, (tile - nw) // 2
    out[y0:y0 + nh, x0:x0 + nw] = cv2.resize(drawn, (nw, nh), interpolation=cv2.INTER_AREA)
    max_chars = max(4, tile // 6)
    for k, line in enumerate(list(caption)[:2]):
        cv2.putText(out, line[-max_chars:] if k == 0 else line[:max_chars], (3, tile + 11 + 13 * k),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.36, (235, 235, 235), 1, cv2.LINE_AA)
    return out


def contact_sheet(tiles: Sequence[np.ndarray], cols: int, tile: int = 192) -> np.ndarray:
    """Tiles from :func:`labelled_tile` on a grid of ``cols`` columns (a dark placeholder when empty)."""
    if not tiles:
        sheet = np.full((tile // 2, tile * cols, 3), 30, np.uint8)
        cv2.putText(sheet, 'none', (8, tile // 4 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (200, 200, 200), 1,
                    cv2.LINE_AA)
        return sheet
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * th, cols * tw, 3), 30, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = t
    return sheet


def draw_stage_counts(ax, stage_counts: Sequence[dict]) -> None:
    """Horizontal bars of kept (green) and rejected (red) samples per stage, in pipeline order, on a matplotlib
    axis; ``stage_counts`` as :func:`save_filter_report` takes them."""
    names = [s['stage'] for s in stage_counts]
    kept = np.array([s['kept'] for s in stage_counts])
    dropped = np.array([s['entered'] - s['kept'] for s in stage_counts])
    y = np.arange(len(names))[::-1]
    ax.barh(y, kept, color='#4c9a2a', label='kept')
    ax.barh(y, dropped, left=kept, color='#c0392b', label='rejected')
    for yi, s in zip(y, stage_counts):
        reasons = ', '.join(f'{r} {n}' for r, n in sorted(s['dropped'].items()))
        ax.text(s['entered'], yi, f"  {s['kept']}/{s['entered']}" + (f'  ({reasons})' if reasons else ''),
                va='center', fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlabel('samples')
    ax.set_xlim(0, max([s['entered'] for s in stage_counts] + [1]) * 1.9)
    ax.set_title('kept / rejected per stage', fontsize=9)
    ax.legend(fontsize=7, loc='lower right')


def draw_oks_histogram(ax, oks: np.ndarray, oks_thr: float | None = None) -> None:
    """Histogram of OKS values (20 bins over [0, 1]) on a matplotlib axis, the filter threshold as a dashed line."""
    oks = np.asarray(oks, np.float64)
    if oks.size:
        ax.hist(oks, bins=np.linspace(0, 1, 21), color='#2e86c1', edgecolor='white')
        ax.set_title(f'OKS (label vs detection), n={oks.size}, mean {oks.mean():.3f}', fontsize=9)
    else:
        ax.set_title('OKS: no pose scoring stage', fontsize=9)
    if oks_thr is not None:
        ax.axvline(oks_thr, color='#c0392b', ls='--', label=f'keep >= {oks_thr:g}')
        ax.legend(fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel('OKS')
    ax.set_ylabel('samples')


def save_filter_report(path: str | os.PathLike, stage_counts: Sequence[dict], oks: np.ndarray,
                       kept_tiles: Sequence[np.ndarray], rejected_tiles: Sequence[np.ndarray],
                       oks_thr: float | None = None, title: str = '', cols: int = 6) -> str:
    """Writes the report PNG.

    Args:
        path: output ``.png``.
        stage_counts: per stage, in pipeline order: ``dict(stage=name, entered=int, kept=int,
            dropped={reason: int})``.
        oks: ``(N,)`` OKS of every scored sample (drawn as a histogram; empty: no histogram).
        kept_tiles, rejected_tiles: :func:`labelled_tile` outputs for the two contact sheets.
        oks_thr: the OKS filter's threshold (a vertical line), if any.
        title: figure title (dataset, counts).
        cols: tiles per contact-sheet row.

    Returns:
        ``path`` as a string.
    """
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    kept_sheet = contact_sheet(list(kept_tiles), cols)
    rejected_sheet = contact_sheet(list(rejected_tiles), cols)
    width_px = kept_sheet.shape[1]
    heights = [300, kept_sheet.shape[0], rejected_sheet.shape[0]]
    dpi = 100
    fig = plt.figure(figsize=(max(width_px, 900) / dpi, (sum(heights) + 60) / dpi), dpi=dpi)
    grid = fig.add_gridspec(3, 2, height_ratios=heights, hspace=0.3, wspace=0.25, top=0.95, bottom=0.02)

    draw_stage_counts(fig.add_subplot(grid[0, 0]), stage_counts)
    draw_oks_histogram(fig.add_subplot(grid[0, 1]), oks, oks_thr)

    for row, (sheet, name) in enumerate(((kept_sheet, 'kept'), (rejected_sheet, 'rejected')), start=1):
        ax = fig.add_subplot(grid[row, :])
        ax.imshow(sheet)
        ax.set_axis_off()
        ax.set_title(f'{name} samples, label skeleton drawn over the image (caption: id; OKS, drop reason)',
                     fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=dpi, bbox_inches='tight')
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)
