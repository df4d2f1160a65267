"""Choosing the K hardest poses of a pool, with a diversity guard so the choice is not one pose repeated.

**The rule** (:func:`select_hardest`): candidates are taken in order of difficulty, hardest first (ties by pool
index); a candidate is accepted when its pose distance to every pose accepted so far is at least
``min_distance_deg``, else it is rejected as a near duplicate of the nearest accepted pose. It stops at ``num``
accepted poses. So with ``min_distance_deg=0`` the result is exactly the ``num`` hardest, and with a guard each
accepted pose is the hardest one not too close to a harder accepted one.

**The pose distance** (:func:`pose_distance_deg`): the mean, over the 21 SMPL-X body joints (and the root when
``use_global_orient``), of the geodesic angle between the two poses' joint rotations,
``arccos((trace(R_a^T R_b) - 1) / 2)`` in degrees. It ignores hands, face, shape and camera: two images of one
body articulation from other yaws or with other hands count as the same pose unless the root is included.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from .errors import MiningError


def joint_rotations(body_pose: np.ndarray, global_orient: np.ndarray | None = None) -> np.ndarray:
    """``(N, 63)`` body poses (and ``(N, 3)`` roots) -> ``(N, J, 3, 3)`` rotation matrices, J = 21 (or 22, root
    first)."""
    body_pose = np.asarray(body_pose, np.float64).reshape(-1, 21, 3)
    if global_orient is not None:
        body_pose = np.concatenate([np.asarray(global_orient, np.float64).reshape(-1, 1, 3), body_pose], 1)
    n, j = body_pose.shape[:2]
    return Rotation.from_rotvec(body_pose.reshape(-1, 3)).as_matrix().reshape(n, j, 3, 3)


def pose_distance_deg(rot_a: np.ndarray, rot_b: np.ndarray) -> np.ndarray:
    """Mean per-joint geodesic angle, degrees, between ``rot_a (..., J, 3, 3)`` and ``rot_b (..., J, 3, 3)``
    (broadcast over the leading axes)."""
    trace = (np.asarray(rot_a) * np.asarray(rot_b)).sum((-1, -2))        # trace(R_a^T R_b)
    angle = np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0))
    return np.degrees(angle).mean(-1)


@dataclasses.dataclass
class Selection:
    """What :func:`select_hardest` chose.

    Attributes:
        indices: ``(K,)`` pool indices, hardest first.
        rejected: pool index -> ``(accepted index it is too close to, distance in degrees)`` for every candidate
            the guard turned away before the K-th was accepted.
        scanned: how many candidates were looked at.
        exhausted: the pool ran out before ``num`` poses were accepted.
    """
    indices: np.ndarray
    rejected: dict[int, tuple[int, float]]
    scanned: int
    exhausted: bool

    def summary(self) -> dict:
        return dict(selected=len(self.indices), rejected_near_duplicates=len(self.rejected), scanned=self.scanned,
                    exhausted=self.exhausted)


def select_hardest(difficulty: np.ndarray, body_pose: np.ndarray, num: int, min_distance_deg: float = 10.0,
                   global_orient: np.ndarray | None = None, progress: bool = False) -> Selection:
    """The ``num`` hardest poses with the diversity guard of the module docstring.

    Args:
        difficulty: ``(N,)`` larger = harder (``DifficultyRegressor.difficulty`` of the predictions).
        body_pose: ``(N, 63)`` axis-angle of the same rows.
        num: How many to select.
        min_distance_deg: Minimum pose distance between any two selected poses, degrees; 0 turns the guard off.
        global_orient: ``(N, 3)`` roots to include in the distance (``None``: body joints only).
        progress: Show a tqdm bar over the candidates scanned.

    Raises:
        MiningError: non-finite difficulty, mismatched lengths or a bad ``num``/``min_distance_deg``.
    """
    difficulty = np.asarray(difficulty, np.float64)
    n = len(difficulty)
    if np.shape(body_pose)[0] != n or (global_orient is not None and np.shape(global_orient)[0] != n):
        raise MiningError(f'difficulty has {n} rows but body_pose {np.shape(body_pose)[0]}'
                          + ('' if global_orient is None else f' and global_orient {np.shape(global_orient)[0]}'))
    if not np.isfinite(difficulty).all():
        raise MiningError(f'{int((~np.isfinite(difficulty)).sum())} difficulty values are NaN or inf')
    if int(num) < 1:
        raise MiningError(f'num must be >= 1, got {num}')
    if not min_distance_deg >= 0:
        raise MiningError(f'min_distance_deg must be >= 0, got {min_distance_deg}')
    num = int(num)
    order = np.argsort(-difficulty, kind='stable')
    chosen: list[int] = []
    chosen_rot: np.ndarray | None = None
    rejected: dict[int, tuple[int, float]] = {}
    scanned = 0
    bar = tqdm(total=num, desc='select', unit='pose', disable=not progress)
    for start in range(0, n, 1024):
        block = order[start:start + 1024]
        rots = joint_rotations(body_pose[block], None if global_orient is None else global_orient[block])
        for idx, rot in zip(block, rots):
            scanned += 1
            if chosen_rot is not None and min_distance_deg > 0:
                dist = pose_distance_deg(rot[None], chosen_rot[:len(chosen)])
                nearest = int(dist.argmin())
                if dist[nearest] < min_distance_deg:
                    rejected[int(idx)] = (chosen[nearest], float(dist[nearest]))
                    continue
            if chosen_rot is None:
                chosen_rot = np.empty((num, *rot.shape))
            chosen_rot[len(chosen)] = rot
            chosen.append(int(idx))
            bar.update(1)
            if len(chosen) == num:
                break
        if len(chosen) == num:
            break
    bar.close()
    return Selection(np.asarray(chosen, np.int64), rejected, scanned, len(chosen) < num)
