"""Mesh toolkit of the SMPL-X stand-in: the joint table, skinning-weight helpers and the swept-tube builder.

Private to :mod:`posedreamer_mm.body.standin` (see its docstring for what the stand-in is). :class:`Part` grows one
closed triangle mesh with per-vertex skinning weights; :func:`sweep` stitches cross-section rings into a tube,
:func:`tube` glues a finger onto a hole. Canonical frame: y up, x = the person's left, facing +z, metres.
"""
from __future__ import annotations

import numpy as np

NUM_VERTS, NUM_FACES, NUM_JOINTS = 10475, 20908, 55

#: The 55 SMPL-X skeleton joints (== ``smplx.joint_names.JOINT_NAMES[:55]``) and their parents.
JOINT_NAMES_55 = (
    'pelvis', 'left_hip', 'right_hip', 'spine1', 'left_knee', 'right_knee', 'spine2', 'left_ankle', 'right_ankle',
    'spine3', 'left_foot', 'right_foot', 'neck', 'left_collar', 'right_collar', 'head', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist', 'jaw', 'left_eye_smplhf',
    'right_eye_smplhf') + tuple(f'{s}_{f}{k}' for s in ('left', 'right')
                                for f in ('index', 'middle', 'pinky', 'ring', 'thumb') for k in (1, 2, 3))
PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15]
                   + [20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38]
                   + [21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53], dtype=np.int64)
#: Joint name -> index in :data:`JOINT_NAMES_55`.
JOINT_INDEX = {n: i for i, n in enumerate(JOINT_NAMES_55)}
_MIRROR = np.array([JOINT_INDEX[n.replace('left', 'TMP').replace('right', 'left').replace('TMP', 'right')]
                    for n in JOINT_NAMES_55])


def smoothstep(t: np.ndarray) -> np.ndarray:
    """Cubic ease from 0 (``t <= 0``) to 1 (``t >= 1``) with zero slope at both ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def chain_weights(s: np.ndarray, breaks: list[float], joints: list[str], width: float) -> np.ndarray:
    """Skinning weights along a chain: segment k (between ``breaks[k-1]`` and ``breaks[k]``) follows
    ``joints[k]``; each break blends over ``+-width`` so joints bend smoothly. Returns ``(n, 55)``."""
    steps = [smoothstep((s - b + width) / (2 * width)) for b in breaks] + [np.zeros_like(s)]
    w = np.zeros((len(s), NUM_JOINTS))
    prev = np.ones_like(s)
    for k, name in enumerate(joints):
        w[:, JOINT_INDEX[name]] += prev - steps[k]
        prev = steps[k]
    return w


def onehot(n: int, name: str) -> np.ndarray:
    """``(n, 55)`` skinning weights that all follow joint ``name``."""
    w = np.zeros((n, NUM_JOINTS))
    w[:, JOINT_INDEX[name]] = 1.0
    return w


class Part:
    """A growing triangle mesh with per-vertex skinning weights and axis centres (for the girth shape)."""

    def __init__(self, name: str):
        self.name = name
        self.pos = np.zeros((0, 3))
        self.center = np.zeros((0, 3))
        self.weights = np.zeros((0, NUM_JOINTS))
        self.faces = np.zeros((0, 3), np.int64)
        self.alive = np.zeros(0, bool)
        self.named: dict[str, int] = {}

    def add(self, pos: np.ndarray, center: np.ndarray, weights: np.ndarray) -> np.ndarray:
        start = len(self.pos)
        self.pos = np.concatenate([self.pos, pos.reshape(-1, 3)])
        self.center = np.concatenate([self.center, np.broadcast_to(center, pos.shape).reshape(-1, 3)])
        self.weights = np.concatenate([self.weights, weights.reshape(-1, NUM_JOINTS)])
        return np.arange(start, len(self.pos)).reshape(pos.shape[:-1])

    def add_faces(self, faces: np.ndarray) -> np.ndarray:
        """Appends faces, flipping the batch if its winding disagrees with the faces already there."""
        faces = np.asarray(faces, np.int64).reshape(-1, 3)
        old = self.faces[self.alive]
        key = lambda f: (f[:, [0, 1, 2]] * (1 << 21) + f[:, [1, 2, 0]]).ravel()  # noqa: E731 directed edges
        if np.isin(key(faces), key(old)).any():  # a shared edge traversed the same way: opposite winding
            faces = faces[:, [0, 2, 1]]
            assert not np.isin(key(faces), key(old)).any(), 'inconsistent winding inside one face batch'
        start = len(self.faces)
        self.faces = np.concatenate([self.faces, faces])
        self.alive = np.concatenate([self.alive, np.ones(len(faces), bool)])
        return np.arange(start, len(self.faces))

    def cut(self, rows: np.ndarray) -> np.ndarray:
        """Removes faces and returns the hole's boundary loop, ordered as the removed faces traverse it."""
        self.alive[rows] = False
        f = self.faces[rows]
        edges = {(int(a), int(b)) for a, b in np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])}
        nxt = {a: b for a, b in edges if (b, a) not in edges}
        loop = [next(iter(nxt))]
        while nxt[loop[-1]] != loop[0]:
            loop.append(nxt[loop[-1]])
        assert len(loop) == len(nxt), 'hole boundary is not a single loop'
        return np.array(loop)

    def compact(self) -> None:
        """Drops dead faces and the vertices only they used (hole interiors)."""
        self.faces = self.faces[self.alive]
        self.alive = np.ones(len(self.faces), bool)
        used = np.unique(self.faces)
        remap = -np.ones(len(self.pos), np.int64)
        remap[used] = np.arange(len(used))
        self.pos, self.center, self.weights = self.pos[used], self.center[used], self.weights[used]
        self.faces = remap[self.faces]
        self.named = {k: int(remap[v]) for k, v in self.named.items()}

    def signed_volume(self) -> float:
        a, b, c = (self.pos[self.faces[:, i]] for i in range(3))
        return float(np.einsum('ij,ij->i', a, np.cross(b, c)).sum() / 6.0)

    def mirrored(self, name: str) -> 'Part':
        """The x -> -x copy (a left limb becomes the right one): winding, joints and names mirrored too."""
        m = Part(name)
        flip = np.array([-1.0, 1.0, 1.0])
        m.pos, m.center, m.weights = self.pos * flip, self.center * flip, self.weights[:, _MIRROR]
        m.faces, m.alive = self.faces[:, [0, 2, 1]].copy(), self.alive.copy()
        swap = {'l': 'r', 'L': 'R'}
        m.named = {swap[k[0]] + k[1:]: v for k, v in self.named.items()}
        return m


def sweep(part: Part, rings: np.ndarray, centers: np.ndarray, weights: np.ndarray,
          pole_lo: np.ndarray | None, pole_hi: np.ndarray | None, w_lo=None, w_hi=None):
    """Stitches ``(R, N, 3)`` cross-section rings into a tube, closed by poles where given.

    Returns the ``(R, N)`` vertex indices and the ``(R - 1, N, 2)`` face rows of each quad (for cutting holes).
    """
    R, N = rings.shape[:2]
    idx = part.add(rings, centers[:, None].repeat(N, 1), weights)
    a, d = idx[:-1], idx[1:]
    b, c = np.roll(a, -1, 1), np.roll(d, -1, 1)
    quads = np.stack([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], 2)
    rows = part.add_faces(quads).reshape(R - 1, N, 2)
    for pole, ring, w in ((pole_lo, idx[0], w_lo), (pole_hi, idx[-1], w_hi)):
        if pole is not None:
            p = part.add(pole[None], pole[None], w[None])[0]
            part.add_faces(np.stack([ring, np.roll(ring, -1), np.full(N, p)], -1))
    return idx, rows


def _frame(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    up = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(up, d)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def tube(part: Part, loop: np.ndarray, d: np.ndarray, ts: np.ndarray, radii: np.ndarray, tip: float,
         weight_fn) -> int:
    """Glues a finger-like tube onto a hole: rings at distances ``ts`` along unit ``d`` from the loop centroid,
    morphing from the hole's shape to circles, then a pole at distance ``tip``. Returns the pole's index."""
    c0 = part.pos[loop].mean(0)
    u, v = _frame(d)
    rel = part.pos[loop] - c0
    theta = np.arctan2(rel @ v, rel @ u)
    prev = loop
    for t, r in zip(ts, radii):
        blend = min(1.0, t / (0.6 * ts[-1] + 1e-9)) ** 0.5
        circle = c0 + t * d + r * (np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * v)
        ring = (1 - blend) * (part.pos[loop] + t * d) + blend * circle
        cur = part.add(ring, c0 + t * d, weight_fn(np.full(len(loop), t)))
        part.add_faces(np.concatenate([np.stack([prev, np.roll(prev, -1), np.roll(cur, -1)], -1),
                                       np.stack([prev, np.roll(cur, -1), cur], -1)]))
        prev = cur
    p = part.add((c0 + tip * d)[None], (c0 + tip * d)[None], weight_fn(np.array([tip])))[0]
    part.add_faces(np.stack([prev, np.roll(prev, -1), np.full(len(prev), p)], -1))
    return int(p)


def stations(profile, lo: float, hi: float, n: int, radius_cols=(0, 1)) -> np.ndarray:
    """``n + 1`` stations from ``lo`` to ``hi`` evenly spaced in the arc length of the profile curve, so that
    quads stay square where the radius changes fast (crown, hands, feet)."""
    s = np.linspace(lo, hi, 400)
    r = profile(s)[:, list(radius_cols)].mean(1)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(s), np.diff(r)))])
    return np.interp(np.linspace(0, arc[-1], n + 1), arc, s)


def superellipse(theta: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(theta), np.sin(theta)
    e = 2.0 / p
    return np.sign(c) * np.abs(c) ** e, np.sign(s) * np.abs(s) ** e
