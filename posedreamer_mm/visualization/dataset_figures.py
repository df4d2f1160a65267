"""The figures of the dataset report (``posedreamer_mm/apis/report.py``): each writes one PNG and returns its path.

They reuse the project's one set of drawing helpers: the filter report's stage bars and OKS histogram
(``visualization/report.py``), its labelled tiles and grid, and the mesh overlay of the HMR demo
(``visualization/mesh_overlay.py``).
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np

from posedreamer_mm.utils.fileio import atomic_write_bytes

from .report import contact_sheet, draw_oks_histogram, draw_stage_counts, labelled_tile

DPI = 100


def _plt():
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str | os.PathLike) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=DPI, bbox_inches='tight')
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)


def save_filter_figure(path: str | os.PathLike, stage_counts: Sequence[dict], oks: np.ndarray,
                       oks_thr: float | None) -> str:
    """Kept/rejected per filter stage and the OKS histogram, side by side (``oks`` may hold ``nan``: unscored)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), dpi=DPI)
    if stage_counts:
        draw_stage_counts(axes[0], stage_counts)
    else:
        axes[0].set_axis_off()
        axes[0].set_title('no filter run (tools/filter.py)', fontsize=9)
    oks = np.asarray(oks, np.float64)
    draw_oks_histogram(axes[1], oks[np.isfinite(oks)], oks_thr)
    return _save(fig, path)


def save_pose_coverage(path: str | os.PathLike, angles: np.ndarray, kept: np.ndarray, pool: np.ndarray | None,
                       coverage: dict | None) -> str:
    """Per body joint: the range of its rotation angle in the source (1st-99th percentile, grey bar), in the dataset
    (all samples: blue ticks at each pose; kept ones darker), and the coverage of the source's angle bins.

    Args:
        angles: ``(N, 21)`` dataset joint angles, degrees.
        kept: ``(N,)`` bool.
        pool: ``(M, 21)`` source joint angles or ``None``.
        coverage: ``dict(all=(21,), kept=(21,))`` fractions, or ``None``.
    """
    from posedreamer_mm.body.sources.procedural import SMPLX_BODY_JOINTS
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), dpi=DPI, gridspec_kw=dict(width_ratios=(3, 1)))
    y = np.arange(21)[::-1]
    ax = axes[0]
    if pool is not None:
        lo, hi = np.percentile(pool, 1, axis=0), np.percentile(pool, 99, axis=0)
        ax.barh(y, hi - lo, left=lo, height=0.7, color='#d5d8dc', label='pose source, 1st-99th percentile')
    for mask, colour, label in ((~kept, '#85c1e9', 'dataset, rejected'), (kept, '#1f618d', 'dataset, kept')):
        if mask.any():
            ys = np.repeat(y[None], mask.sum(), 0).ravel()
            ax.scatter(angles[mask].ravel(), ys, marker='|', s=60, color=colour, label=label, linewidths=1)
    ax.set_yticks(y, SMPLX_BODY_JOINTS, fontsize=8)
    ax.set_xlim(0, 180)
    ax.set_xlabel('rotation angle from the rest pose, degrees (|axis-angle|)')
    ax.set_title('pose diversity per body joint: dataset vs pose source', fontsize=9)
    ax.legend(fontsize=7, loc='lower right')
    ax = axes[1]
    if coverage is not None:
        ax.barh(y + 0.2, coverage['all'], height=0.4, color='#85c1e9', label='all')
        ax.barh(y - 0.2, coverage['kept'], height=0.4, color='#1f618d', label='kept')
        ax.set_xlim(0, 1)
        ax.set_yticks(y, [''] * 21)
        ax.set_xlabel("fraction of the source's 10-degree bins reached")
        ax.set_title(f"coverage (mean: all {np.nanmean(coverage['all']):.2f}, kept "
                     f"{np.nanmean(coverage['kept']):.2f})", fontsize=9)
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
        ax.set_title('pose source not readable here: no coverage', fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def save_shape_camera(path: str | os.PathLike, betas: np.ndarray, source_focal: np.ndarray, crop_focal: np.ndarray,
                      distance_m: np.ndarray, yaw_deg: np.ndarray, kept: np.ndarray) -> str:
    """Histograms of the shape (first betas, one box per component) and of the camera: source focal, crop focal,
    pelvis distance, body yaw; kept samples dark, all samples light."""
    plt = _plt()
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.2), dpi=DPI)
    ax = axes[0]
    if betas.size:
        k = min(10, betas.shape[1])
        ax.boxplot([betas[:, i] for i in range(k)], positions=np.arange(k), widths=0.6, showfliers=True)
        ax.set_xticks(np.arange(k), [str(i) for i in range(k)], fontsize=7)
    ax.set_xlabel('beta component')
    ax.set_title('shape (betas)', fontsize=9)
    for ax, values, name in zip(axes[1:], (source_focal, crop_focal, distance_m, yaw_deg),
                                ('source focal, px (full image)', 'crop focal, px (stored image)',
                                 'pelvis distance, m', 'body yaw, degrees (0 faces the camera)')):
        v = np.asarray(values, np.float64)
        ok = np.isfinite(v)
        if ok.any():
            lo, hi = float(v[ok].min()), float(v[ok].max())
            bins = np.linspace(lo - 0.5, hi + 0.5, 2) if hi - lo < 1e-6 else np.linspace(lo, hi, 16)
            ax.hist(v[ok], bins=bins, color='#aed6f1', label='all')
            ax.hist(v[ok & kept], bins=bins, color='#1f618d', label='kept')
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def save_mesh_contact_sheet(path: str | os.PathLike, reader, rows: Sequence[int], captions: dict[int, str],
                            tile: int = 192, cols: int = 6) -> str:
    """Pairs of tiles per sample: its image, and the image with the label's SMPL-X mesh (posed with the body model
    the manifest records, rendered at the sample's camera) and COCO-17 skeleton drawn over it.

    Args:
        reader: The :class:`~posedreamer_mm.generation.reader.GeneratedDataReader`.
        rows: Dataset rows to show, in order.
        captions: Second caption line per row (e.g. kept / rejected and the OKS).
    """
    import torch

    from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel
    from posedreamer_mm.generation.coco_export import manifest_body_model
    from posedreamer_mm.render import ShadedRenderer

    from .mesh_overlay import render_mesh_overlay
    tiles = []
    if rows:
        body = GenderedSMPLXBodyModel.from_config(manifest_body_model(reader))
        samples = [reader.sample(i) for i in rows]
        with torch.no_grad():
            verts = body.forward_samples(samples).vertices.cpu().numpy()
        renderer = ShadedRenderer(size=None)
        for i, sample, v in zip(rows, samples, verts):
            img = reader.load_image(i)
            kp = np.asarray(sample.keypoints_coco17, np.float32)
            over = render_mesh_overlay(img, [v], body.faces, sample.focal, sample.princpt, alpha=0.55,
                                       renderer=renderer)
            tiles.append(labelled_tile(img, kp * np.array([1, 1, 0], np.float32), (reader.ids[i], captions.get(i, '')),
                                       tile))
            tiles.append(labelled_tile(over, kp, ('SMPL-X mesh + COCO-17 label', ''), tile))
    sheet = contact_sheet(tiles, cols, tile)
    import cv2
    ok, buf = cv2.imencode('.png', cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError('could not encode the contact sheet')
    atomic_write_bytes(path, buf.tobytes())
    return os.fspath(path)


def save_loss_curve(path: str | os.PathLike, loss: Sequence[tuple[int, float]]) -> str:
    """The training loss against the iteration."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3), dpi=DPI)
    it, val = zip(*loss)
    ax.plot(it, val, color='#1f618d', marker='.')
    ax.set_xlabel('iteration')
    ax.set_ylabel('total loss')
    ax.set_title('HMR training loss', fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


__all__ = ['save_filter_figure', 'save_pose_coverage', 'save_shape_camera', 'save_mesh_contact_sheet',
           'save_loss_curve']
