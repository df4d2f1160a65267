"""A pure-numpy reference z-buffer rasteriser and small known meshes, for tests and benchmarks only.

Slow (tens of renders per second at best) and without near-plane clipping: triangles with a vertex at
``z <= near`` are dropped. It follows the same conventions as :mod:`posedreamer_mm.render.rasterizer`: a pixel
(u, v) (integer = pixel centre) is covered when its centre lies inside (or on an edge of) the projected
triangle, the nearest fragment wins, and attributes are interpolated perspective-correctly.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

_MAX_CANDIDATES = 1 << 22  # pixel candidates evaluated per vectorised chunk


def _next_pow2(x: np.ndarray) -> np.ndarray:
    return (1 << np.ceil(np.log2(np.maximum(x, 1))).astype(np.int64)).astype(np.int64)


def reference_rasterize(vertices: np.ndarray, faces: np.ndarray, focal: Sequence[float],
                        princpt: Sequence[float], img_size: Sequence[int], colors: np.ndarray | None = None,
                        near: float = 1e-3) -> dict[str, np.ndarray]:
    """Rasterises one mesh with a vectorised numpy z-buffer (reference for tests).

    Args:
        vertices: (V, 3) camera-frame positions in metres (OpenCV frame).
        faces: (F, 3) vertex indices.
        focal: (fx, fy) pixels.
        princpt: (cx, cy) pixels.
        img_size: (W, H).
        colors: optional (V, C) per-vertex attributes to interpolate.
        near: triangles with any vertex nearer than this are dropped.

    Returns:
        ``mask`` (H, W) bool, ``depth`` (H, W) float64 camera z (0 background), ``face_index`` (H, W) int64
        (-1 background), ``bary`` (H, W, 3) perspective-correct barycentrics, and ``color`` (H, W, C) float64
        when ``colors`` is given.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    w, h = (int(s) for s in img_size)
    z = v[:, 2]
    uv = np.stack([focal[0] * v[:, 0] / np.where(z > 0, z, 1) + princpt[0],
                   focal[1] * v[:, 1] / np.where(z > 0, z, 1) + princpt[1]], 1)
    keep = (z[f] > near).all(1)
    fid = np.nonzero(keep)[0]
    tri = uv[f[fid]]  # (T, 3, 2)
    x0 = np.clip(np.ceil(tri[..., 0].min(1)), 0, w).astype(np.int64)
    x1 = np.clip(np.floor(tri[..., 0].max(1)), -1, w - 1).astype(np.int64)
    y0 = np.clip(np.ceil(tri[..., 1].min(1)), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(tri[..., 1].max(1)), -1, h - 1).astype(np.int64)
    ok = (x1 >= x0) & (y1 >= y0)
    fid, tri, x0, x1, y0, y1 = fid[ok], tri[ok], x0[ok], x1[ok], y0[ok], y1[ok]
    pw, ph = _next_pow2(x1 - x0 + 1), _next_pow2(y1 - y0 + 1)

    pix_all, z_all, face_all, bary_all = [], [], [], []
    for bw, bh in sorted(set(zip(pw.tolist(), ph.tolist()))):
        sel_all = np.nonzero((pw == bw) & (ph == bh))[0]
        step = max(1, _MAX_CANDIDATES // (bw * bh))
        for s in range(0, len(sel_all), step):
            sel = sel_all[s:s + step]
            px = x0[sel, None, None] + np.arange(bw)[None, None, :]  # (T, 1, bw)
            py = y0[sel, None, None] + np.arange(bh)[None, :, None]  # (T, bh, 1)
            a, b, c = (tri[sel, k, :, None, None] for k in range(3))  # each (T, 2, 1, 1)

            def edge(p, q):
                return (q[:, 0] - p[:, 0]) * (py - p[:, 1]) - (q[:, 1] - p[:, 1]) * (px - p[:, 0])

            wa, wb, wc = edge(b, c), edge(c, a), edge(a, b)  # (T, bh, bw)
            area = (wa + wb + wc)
            with np.errstate(divide='ignore', invalid='ignore'):
                la, lb, lc = wa / area, wb / area, wc / area
            eps = 1e-9
            inside = ((la >= -eps) & (lb >= -eps) & (lc >= -eps) & (np.abs(area) > 1e-12)
                      & (px <= x1[sel, None, None]) & (py <= y1[sel, None, None]))
            t, yy, xx = np.nonzero(inside)
            zt = z[f[fid[sel]]]  # (T, 3)
            lam = np.stack([la[t, yy, xx], lb[t, yy, xx], lc[t, yy, xx]], 1) / zt[t]
            inv_z = lam.sum(1)
            pix_all.append((py[t, yy, 0]) * w + px[t, 0, xx])
            z_all.append(1.0 / inv_z)
            face_all.append(fid[sel][t])
            bary_all.append(lam / inv_z[:, None])

    mask = np.zeros(h * w, bool)
    depth = np.zeros(h * w)
    face_index = np.full(h * w, -1, np.int64)
    bary = np.zeros((h * w, 3))
    if pix_all:
        pix, zz = np.concatenate(pix_all), np.concatenate(z_all)
        order = np.lexsort((zz, pix))
        first = order[np.unique(pix[order], return_index=True)[1]]
        p = pix[first]
        mask[p] = True
        depth[p] = zz[first]
        face_index[p] = np.concatenate(face_all)[first]
        bary[p] = np.concatenate(bary_all)[first]
    out = dict(mask=mask.reshape(h, w), depth=depth.reshape(h, w), face_index=face_index.reshape(h, w),
               bary=bary.reshape(h, w, 3))
    if colors is not None:
        col = np.asarray(colors, dtype=np.float64)
        c = np.zeros((h * w, col.shape[1]))
        fi = face_index.reshape(-1)
        m = fi >= 0
        c[m] = np.einsum('pk,pkc->pc', bary[m], col[f[fi[m]]])
        out['color'] = c.reshape(h, w, -1)
    return out


# --- small known meshes for tests and benchmarks ---------------------------------------------------------------
def uv_sphere(center=(0.0, 0.0, 3.0), radius: float = 0.5, rings: int = 32,
              segments: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A closed UV sphere: (V, 3) float32 vertices and (F, 3) int64 faces (outward right-handed winding).

    ``rings=80, segments=131`` gives about SMPL-X's size (10.5K vertices, 21K faces).
    """
    theta = np.linspace(0.0, np.pi, rings + 1)[1:-1]
    phi = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing='ij')
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius + np.asarray(center)
    n_ring = len(theta)
    j = np.arange(segments)
    jn = (j + 1) % segments
    faces = [np.stack([np.zeros(segments, int), 1 + jn, 1 + j], 1)]
    for i in range(n_ring - 1):
        a, b = 1 + i * segments + j, 1 + i * segments + jn
        c, d = a + segments, b + segments
        faces += [np.stack([a, b, c], 1), np.stack([b, d, c], 1)]
    last = 1 + (n_ring - 1) * segments
    faces.append(np.stack([np.full(segments, len(verts) - 1), last + j, last + jn], 1))
    return verts.astype(np.float32), np.concatenate(faces).astype(np.int64)


def box(center=(0.0, 0.0, 3.0), size=(0.4, 0.4, 0.4)) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box: (8, 3) float32 vertices and (12, 3) int64 faces."""
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    verts = corners * np.asarray(size) + np.asarray(center)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads]
    return verts.astype(np.float32), np.asarray(faces, np.int64)


def quad(center=(0.0, 0.0, 3.0), size=(1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """A fronto-parallel rectangle at depth ``center[2]``: (4, 3) vertices, (2, 3) faces."""
    (cx, cy, cz), (w, h) = center, size
    verts = np.array([[cx - w / 2, cy - h / 2, cz], [cx + w / 2, cy - h / 2, cz], [cx + w / 2, cy + h / 2, cz],
                      [cx - w / 2, cy + h / 2, cz]])
    return verts.astype(np.float32), np.array([[0, 1, 2], [0, 2, 3]], np.int64)
