"""Mesh-recovery errors (PVE, PA-PVE, MPJPE, PA-MPJPE and their hand/face variants) in millimetres, following the
SMPLer-X evaluation protocol (Cai et al., NeurIPS 2023, https://arxiv.org/abs/2309.17448; its ``UBody.evaluate``).

Protocol, per sample, with meshes in metres (camera frame; any frame works, the alignments remove it):

- **PVE** (``mpvpe_all``): all SMPL-X vertices after translating the prediction so its pelvis lands on the ground
  truth's pelvis; pelvis = ``J_regressor``'s pelvis row applied to each mesh. **PA-PVE**: after a similarity
  Procrustes alignment of all vertices to the ground truth.
- **Hands** (``mpvpe_hand``): the vertices of each hand, aligned at that hand's wrist joint (``J_regressor`` rows),
  averaged over the two hands; PA: Procrustes per hand. **Face** (``mpvpe_face``): face vertices aligned at the
  neck joint; PA: Procrustes on the face.
- **MPJPE / PA-MPJPE** on body joints regressed from the meshes (SMPLer-X: its J14 regressor; default here the
  22 SMPL-X body-skeleton joints of ``J_regressor``), pelvis-aligned / Procrustes-aligned; hand joints (SMPLer-X's
  21 per hand: wrist, 15 finger joints, 5 fingertip vertices) wrist-aligned / Procrustes per hand.

Only ground-truth points that project inside the image count (SMPLer-X's ``validate_within_img``; the alignments
use all points); hands average the hands with at least one such point.

The Procrustes alignment is SMPLer-X's ``rigid_align`` (Umeyama: scale, rotation with the reflection fixed,
translation), batched. All functions take numpy arrays with a leading batch axis and return ``(B,)`` float64 in mm.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: SMPL-X skeleton joint indices the protocol aligns at (``smplx.joint_names``).
PELVIS, NECK, LEFT_WRIST, RIGHT_WRIST = 0, 12, 20, 21
#: The 22 body-skeleton joints (pelvis .. wrists) of the default body-joint set.
BODY_JOINTS = tuple(range(22))
#: Hand joints: wrist then the 15 finger joints (``smplx.joint_names`` order).
LEFT_HAND_JOINTS = (LEFT_WRIST,) + tuple(range(25, 40))
RIGHT_HAND_JOINTS = (RIGHT_WRIST,) + tuple(range(40, 55))
#: SMPL-X fingertip vertices (thumb, index, middle, ring, pinky; ``smplx.vertex_ids['smplx']``), which SMPLer-X adds
#: to the 16 hand joints for its 21-joint (MANO-style) hand regressor.
LEFT_TIP_VERTICES = (5361, 4933, 5058, 5169, 5286)
RIGHT_TIP_VERTICES = (8079, 7669, 7794, 7905, 8022)


def hand_regressors(j_regressor: np.ndarray, tips: tuple[Sequence[int], Sequence[int]] | None = (
        LEFT_TIP_VERTICES, RIGHT_TIP_VERTICES)) -> tuple[np.ndarray, np.ndarray]:
    """``(left, right)`` ``(21, V)`` hand-joint regressors as SMPLer-X builds them: the wrist and 15 finger rows of
    ``j_regressor (55, V)`` plus one-hot rows of the 5 fingertip vertices (the wrist stays row 0; the protocol's
    errors do not depend on the order). ``tips=None``: the 16 skeleton rows only."""
    j_regressor = np.asarray(j_regressor, np.float64)
    out = []
    for joints, tip in zip((LEFT_HAND_JOINTS, RIGHT_HAND_JOINTS), tips or ((), ())):
        onehot = np.zeros((len(tip), j_regressor.shape[1]))
        onehot[np.arange(len(tip)), list(tip)] = 1.0
        out.append(np.concatenate([j_regressor[list(joints)], onehot]))
    return out[0], out[1]


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Similarity-aligns ``pred (B, N, 3)`` to ``gt (B, N, 3)`` (least squares; SMPLer-X ``rigid_align``).

    Returns:
        ``(B, N, 3)`` float64: ``s R pred + t`` with the optimal scale ``s``, rotation ``R`` (det +1) and ``t``.
    """
    a, b = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f'procrustes_align needs two (B, N, 3) arrays of one shape, got {a.shape} and {b.shape}')
    mu_a, mu_b = a.mean(1, keepdims=True), b.mean(1, keepdims=True)
    a0, b0 = a - mu_a, b - mu_b
    h = np.einsum('bni,bnj->bij', a0, b0) / a.shape[1]
    u, s, vh = np.linalg.svd(h)
    flip = np.linalg.det(np.einsum('bji,bkj->bik', vh, u)) < 0  # det(V U^T)
    s = s.copy()
    s[flip, -1] *= -1
    vh = vh.copy()
    vh[flip, -1] *= -1
    rot = np.einsum('bji,bkj->bik', vh, u)  # V U^T
    var = a0.var(1).sum(-1)  # np.var per axis, summed (SMPLer-X's varP)
    scale = s.sum(-1) / np.maximum(var, 1e-300)
    return scale[:, None, None] * np.einsum('bij,bnj->bni', rot, a0) + mu_b


def masked_mean(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``values (B, N)`` over the points where ``valid (B, N)``; NaN for a sample without a valid point."""
    if valid is None:
        return values.mean(-1)
    valid = np.asarray(valid, bool)
    count = valid.sum(-1)
    total = np.where(valid, values, 0.0).sum(-1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def point_error_mm(pred: np.ndarray, gt: np.ndarray, pred_ref: np.ndarray | None = None,
                   gt_ref: np.ndarray | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean Euclidean distance in mm of ``(B, N, 3)`` metres, after moving ``pred_ref (B, 3)`` onto ``gt_ref``.

    Without references the points are compared as given. ``valid (B, N)``: average over these points only (NaN
    where a sample has none).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f'prediction {pred.shape} and ground truth {gt.shape} differ in shape')
    if pred_ref is not None:
        pred = pred - np.asarray(pred_ref, np.float64)[:, None] + np.asarray(gt_ref, np.float64)[:, None]
    return masked_mean(np.linalg.norm(pred - gt, axis=-1), valid) * 1000.0


def pa_point_error_mm(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean distance in mm after :func:`procrustes_align` on all points (PA-PVE / PA-MPJPE), averaged over
    ``valid`` points."""
    return point_error_mm(procrustes_align(pred, gt), gt, valid=valid)


def in_image(points: np.ndarray, focal: np.ndarray, princpt: np.ndarray, img_wh: np.ndarray) -> np.ndarray:
    """``(B, N)`` bool: camera-frame ``points (B, N, 3)`` in front of the camera that project strictly inside the
    image, ``0 < u < W`` and ``0 < v < H`` (SMPLer-X's ``validate_within_img``).

    Args:
        points: metres, OpenCV camera frame.
        focal: ``(B, 2)`` pixels.
        princpt: ``(B, 2)`` pixels.
        img_wh: ``(B, 2)`` (W, H) pixels.
    """
    points = np.asarray(points, np.float64)
    z = points[..., 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        uv = points[..., :2] / z[..., None] * np.asarray(focal, np.float64)[:, None] \
            + np.asarray(princpt, np.float64)[:, None]
    wh = np.asarray(img_wh, np.float64)[:, None]
    return (z > 0) & (uv > 0).all(-1) & (uv < wh).all(-1)


def regress(regressor: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Joints ``(B, J, 3)`` = ``regressor (J, V)`` applied to ``vertices (B, V, 3)``."""
    return np.einsum('jv,bvc->bjc', np.asarray(regressor, np.float64), np.asarray(vertices, np.float64))


def pve_mm(pred_verts, gt_verts, j_regressor) -> np.ndarray:
    """PVE: all vertices, pelvis-aligned (the pelvis regressed from each mesh). ``(B,)`` mm."""
    pp, gp = regress(j_regressor[PELVIS:PELVIS + 1], pred_verts), regress(j_regressor[PELVIS:PELVIS + 1], gt_verts)
    return point_error_mm(pred_verts, gt_verts, pp[:, 0], gp[:, 0])


def mpjpe_mm(pred_joints, gt_joints, pred_root, gt_root) -> np.ndarray:
    """MPJPE of ``(B, J, 3)`` joints after moving ``pred_root (B, 3)`` onto ``gt_root``. ``(B,)`` mm."""
    return point_error_mm(pred_joints, gt_joints, pred_root, gt_root)


def smplx_errors_mm(pred_verts: np.ndarray, gt_verts: np.ndarray, j_regressor: np.ndarray,
                    hand_vertex_ids: tuple[np.ndarray, np.ndarray] | None = None,
                    face_vertex_ids: np.ndarray | None = None,
                    body_regressor: np.ndarray | None = None,
                    hand_joint_regressors: tuple[np.ndarray, np.ndarray] | None = None,
                    camera: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every error of the protocol (module docstring) for a batch of SMPL-X meshes.

    Args:
        pred_verts: ``(B, V, 3)`` metres.
        gt_verts: ``(B, V, 3)`` metres.
        j_regressor: ``(55, V)`` SMPL-X skeleton regressor (pelvis, neck, wrists and hand joints come from it).
        hand_vertex_ids: ``(left, right)`` vertex index arrays; None skips the hand vertex errors.
        face_vertex_ids: Face vertex indices; None skips the face errors.
        body_regressor: ``(J, V)`` body-joint regressor (SMPLer-X's J14); default the 22 body-skeleton rows of
            ``j_regressor``.
        hand_joint_regressors: ``(left, right)`` ``(K, V)`` hand-joint regressors whose row 0 is the wrist
            (:func:`hand_regressors`: SMPLer-X's 21 joints with fingertips); default the 16 skeleton rows.
        camera: ``(focal (B, 2), princpt (B, 2), img_wh (B, 2))`` of the images, with ``gt_verts`` in that camera's
            frame: errors then average only over ground-truth points that project inside the image (SMPLer-X's UBody
            protocol; alignments still use every point). None: every point counts.

    Returns:
        ``{name: (B,) mm}``: ``pve``, ``pa_pve``, ``mpjpe``, ``pa_mpjpe`` (body joints), ``mpjpe_hand``,
        ``pa_mpjpe_hand`` (hand joints, wrist-aligned / per-hand Procrustes, mean of both hands) and,
        when the vertex sets are given, ``pve_hand``, ``pa_pve_hand``, ``pve_face``, ``pa_pve_face``. With
        ``camera``, NaN where a sample has no point of that kind inside the image (leave those samples out of the
        mean, as SMPLer-X does for hands and face).
    """
    pred_verts, gt_verts = np.asarray(pred_verts, np.float64), np.asarray(gt_verts, np.float64)
    if pred_verts.shape != gt_verts.shape or pred_verts.ndim != 3:
        raise ValueError(f'prediction {pred_verts.shape} and ground-truth {gt_verts.shape} meshes must both be '
                         '(B, V, 3) of the same body model')
    pj, gj = regress(j_regressor, pred_verts), regress(j_regressor, gt_verts)
    body = j_regressor[list(BODY_JOINTS)] if body_regressor is None else body_regressor
    pb, gb = regress(body, pred_verts), regress(body, gt_verts)
    valid = (lambda pts: None) if camera is None else (lambda pts: in_image(pts, *camera))  # noqa: E731
    vert_valid = valid(gt_verts)

    def part(mask, ids):
        return None if mask is None else mask[:, ids]

    out = dict(pve=point_error_mm(pred_verts, gt_verts, pj[:, PELVIS], gj[:, PELVIS], vert_valid),
               pa_pve=pa_point_error_mm(pred_verts, gt_verts, vert_valid),
               mpjpe=point_error_mm(pb, gb, pj[:, PELVIS], gj[:, PELVIS], valid(gb)),
               pa_mpjpe=pa_point_error_mm(pb, gb, valid(gb)))
    regs = hand_joint_regressors or hand_regressors(j_regressor, tips=None)
    hands = [(regress(r, pred_verts), regress(r, gt_verts)) for r in regs]
    out['mpjpe_hand'] = _mean_of_hands([point_error_mm(p, g, p[:, 0], g[:, 0], valid(g)) for p, g in hands])
    out['pa_mpjpe_hand'] = _mean_of_hands([pa_point_error_mm(p, g, valid(g)) for p, g in hands])
    if hand_vertex_ids is not None:
        pairs = [(np.asarray(ids), w) for ids, w in zip(hand_vertex_ids, (LEFT_WRIST, RIGHT_WRIST))]
        out['pve_hand'] = _mean_of_hands([point_error_mm(pred_verts[:, i], gt_verts[:, i], pj[:, w], gj[:, w],
                                                         part(vert_valid, i)) for i, w in pairs])
        out['pa_pve_hand'] = _mean_of_hands([pa_point_error_mm(pred_verts[:, i], gt_verts[:, i], part(vert_valid, i))
                                             for i, _ in pairs])
    if face_vertex_ids is not None:
        f = np.asarray(face_vertex_ids)
        out['pve_face'] = point_error_mm(pred_verts[:, f], gt_verts[:, f], pj[:, NECK], gj[:, NECK],
                                         part(vert_valid, f))
        out['pa_pve_face'] = pa_point_error_mm(pred_verts[:, f], gt_verts[:, f], part(vert_valid, f))
    return out


def _mean_of_hands(per_hand: list[np.ndarray]) -> np.ndarray:
    """Mean over the hands with a value (SMPLer-X averages the hands that have a visible point); NaN if none."""
    stacked = np.stack(per_hand)
    count = np.isfinite(stacked).sum(0)
    with np.errstate(invalid='ignore'):
        return np.where(count > 0, np.nansum(stacked, 0) / np.maximum(count, 1), np.nan)


def part_vertex_ids(weights: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Hand and face vertex sets from SMPL-X skinning ``weights (V, 55)``, for when SMPLer-X's MANO/FLAME vertex-id
    files are not available: a vertex belongs to the part of its dominant joint (left hand: left wrist and
    fingers; right hand likewise; face: head, jaw, eyes). An approximation of the MANO (778 per hand) and FLAME
    (5023) regions; name the id files in the metric to follow the protocol exactly.

    Returns:
        ``((left_ids, right_ids), face_ids)`` int64 arrays.
    """
    dominant = np.asarray(weights).argmax(1)
    left = np.flatnonzero(np.isin(dominant, LEFT_HAND_JOINTS))
    right = np.flatnonzero(np.isin(dominant, RIGHT_HAND_JOINTS))
    face = np.flatnonzero(np.isin(dominant, (15, 22, 23, 24)))
    return (left, right), face


__all__ = ['PELVIS', 'NECK', 'LEFT_WRIST', 'RIGHT_WRIST', 'BODY_JOINTS', 'LEFT_HAND_JOINTS', 'RIGHT_HAND_JOINTS',
           'LEFT_TIP_VERTICES', 'RIGHT_TIP_VERTICES', 'hand_regressors',
           'procrustes_align', 'masked_mean', 'in_image', 'point_error_mm', 'pa_point_error_mm', 'regress', 'pve_mm',
           'mpjpe_mm', 'smplx_errors_mm', 'part_vertex_ids']
