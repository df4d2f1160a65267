"""The body parts of the SMPL-X stand-in: trunk (with the face), left arm with hand, left leg with foot, left eye.

Private to :mod:`posedreamer_mm.body.standin`, which mirrors the left parts into right ones and assembles the file.
Each builder returns a :class:`~posedreamer_mm.body._standin_mesh.Part` in the canonical frame (y up, x = the
person's left, facing +z, metres, T-pose); profiles are tables of cross-sections interpolated along the part.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

from ._standin_mesh import (
    JOINT_INDEX,
    NUM_JOINTS,
    Part,
    chain_weights,
    onehot,
    smoothstep,
    stations,
    superellipse,
    sweep,
    tube,
)

# Trunk profile: y -> half-width, front/back half-depth, depth centre, superellipse exponent.
_TRUNK = np.array([
    [-0.515, 0.040, 0.030, 0.035, 0.010, 2.0], [-0.50, 0.095, 0.060, 0.070, 0.010, 2.2],
    [-0.47, 0.145, 0.085, 0.100, 0.012, 2.4], [-0.42, 0.168, 0.092, 0.112, 0.012, 2.5],
    [-0.33, 0.163, 0.093, 0.108, 0.012, 2.5], [-0.25, 0.150, 0.090, 0.095, 0.010, 2.5],
    [-0.15, 0.135, 0.092, 0.085, 0.005, 2.4], [-0.05, 0.145, 0.102, 0.085, 0.000, 2.4],
    [0.03, 0.160, 0.110, 0.090, 0.000, 2.5], [0.10, 0.172, 0.100, 0.088, -0.010, 2.8],
    [0.14, 0.168, 0.082, 0.078, -0.020, 3.0], [0.165, 0.115, 0.068, 0.064, -0.020, 2.6],
    [0.185, 0.062, 0.058, 0.055, -0.015, 2.2], [0.22, 0.054, 0.054, 0.054, -0.005, 2.0],
    [0.245, 0.058, 0.082, 0.060, 0.005, 2.0], [0.27, 0.068, 0.092, 0.078, 0.010, 2.1],
    [0.30, 0.074, 0.096, 0.092, 0.010, 2.2], [0.34, 0.077, 0.096, 0.098, 0.010, 2.2],
    [0.38, 0.077, 0.090, 0.100, 0.005, 2.2], [0.41, 0.066, 0.074, 0.085, 0.000, 2.1],
    [0.432, 0.036, 0.038, 0.046, 0.000, 2.0]])
_TRUNK_N = 48
_EYE_X, _EYE_Y, _MOUTH_Y, _NOSE_Y, _EAR_Y = 0.032, 0.346, 0.268, 0.305, 0.33
BODY_JOINTS = {  # canonical T-pose joints (left side; right ones are mirrored)
    'pelvis': (0.0031, -0.3512, 0.0121), 'left_hip': (0.085, -0.44, 0.005), 'spine1': (0.0, -0.24, -0.005),
    'left_knee': (0.10, -0.78, 0.008), 'spine2': (0.0, -0.11, -0.008), 'left_ankle': (0.088, -1.20, -0.012),
    'spine3': (0.0, -0.05, -0.005), 'left_foot': (0.095, -1.262, 0.105), 'neck': (0.0, 0.195, -0.018),
    'left_collar': (0.075, 0.125, -0.018), 'head': (0.0, 0.272, -0.004), 'left_shoulder': (0.18, 0.125, -0.02),
    'left_elbow': (0.45, 0.12, -0.025), 'left_wrist': (0.70, 0.12, -0.02), 'jaw': (0.0, 0.262, 0.025)}


def build_trunk(counts: tuple[int, int, int]) -> tuple[Part, dict]:
    """Crotch-to-crown sweep with face details, eye and mouth openings; returns it and the eye-hole loops."""
    prof = PchipInterpolator(_TRUNK[:, 0], _TRUNK[:, 1:], axis=0)
    ys = np.unique(np.concatenate([
        stations(prof, -0.515, _MOUTH_Y - 0.006, counts[0]), [_MOUTH_Y - 0.006, _MOUTH_Y, _MOUTH_Y + 0.006],
        stations(prof, _MOUTH_Y + 0.006, _EYE_Y - 0.006, counts[1]),
        stations(prof, _EYE_Y + 0.006, 0.432, counts[2])]).round(6))
    ax, azf, azb, zc, p = prof(ys).T
    theta = 2 * np.pi * np.arange(_TRUNK_N) / _TRUNK_N  # vertex 12 is the front midline, 0 the left side
    cx, sz = superellipse(theta[None], p[:, None])
    az = azb[:, None] + (azf - azb)[:, None] * (1 + np.sin(theta)) / 2
    rings = np.stack([ax[:, None] * cx, ys[:, None].repeat(_TRUNK_N, 1), zc[:, None] + az * sz], -1)
    centers = np.stack([0 * ys, ys, zc], -1)
    # Nose, brow and ears are local bumps, so displacements (profile rows can only change whole rings).
    x, y, z = rings[..., 0], rings[..., 1], rings[..., 2]
    front = np.sin(theta)[None] > 0.3
    nose_h = np.interp(y, [0.29, _NOSE_Y, 0.355, 0.37], [0.0, 0.022, 0.004, 0.0])
    z += front * nose_h * np.exp(-0.5 * (x / 0.0105) ** 2)
    z += front * 0.004 * np.exp(-0.5 * ((y - 0.362) / 0.008) ** 2) * (np.abs(x) > 0.01) * (np.abs(x) < 0.06)
    side = np.abs(np.cos(theta))[None] > 0.9
    x += side * np.sign(x) * 0.014 * np.exp(-0.5 * ((y - _EAR_Y) / 0.02) ** 2 - 0.5 * ((z + 0.005) / 0.012) ** 2)
    w = _trunk_weights(rings.reshape(-1, 3)).reshape(len(ys), _TRUNK_N, NUM_JOINTS)
    part = Part('trunk')
    lo, hi = np.array([0.0, -0.52, zc[0]]), np.array([0.0, 0.438, zc[-1]])
    idx, rows = sweep(part, rings, centers, w, lo, hi, _trunk_weights(lo[None])[0], _trunk_weights(hi[None])[0])
    # Openings: eyes 1x2 quads centred on the vertex nearest the eye, mouth 2x2 quads on the midline.
    ie, im = int(np.searchsorted(ys, _EYE_Y - 0.006)), int(np.searchsorted(ys, _MOUTH_Y - 0.006))
    jc = int(np.argmin(np.abs(x[ie, :_TRUNK_N // 4] - _EYE_X)))
    holes = {}
    for key, j in (('l', jc), ('r', _TRUNK_N // 2 - jc)):
        for dj in (-1, 1):  # pinch the corners: an almond, not a slot
            part.pos[idx[ie, j + dj], 1] += 0.003
            part.pos[idx[ie + 1, j + dj], 1] -= 0.003
        holes[key] = part.cut(rows[ie, j - 1:j + 1].ravel())
    mid = _TRUNK_N // 4
    for s in (-1, 1):  # widen the mouth corners
        part.pos[idx[im + 1, mid + s], 0] += -s * 0.006
    part.cut(rows[im:im + 2, mid - 1:mid + 1].ravel())
    head = (y > 0.285) & (y < 0.33) & (np.abs(np.arange(_TRUNK_N) - mid) == 0)[None]
    part.named['nose'] = int(idx[head][np.argmax(z[head])])
    ear = (y > 0.30) & (y < 0.36) & (np.arange(_TRUNK_N) < _TRUNK_N // 4)[None]
    part.named['lear'] = int(idx[ear][np.argmax(x[ear])])
    ear = (y > 0.30) & (y < 0.36) & (np.abs(np.arange(_TRUNK_N) - _TRUNK_N // 2) < _TRUNK_N // 4)[None]
    part.named['rear'] = int(idx[ear][np.argmin(x[ear])])
    return part, holes


def _trunk_weights(p: np.ndarray) -> np.ndarray:
    y = p[:, 1]
    w = chain_weights(y, [-0.30, -0.17, -0.08, 0.185], ['pelvis', 'spine1', 'spine2', 'spine3', 'neck'], 0.03)
    # Head vs neck along a boundary tilted forward: the chin belongs to the head, the throat to the neck, and
    # a head turn twists the long neck band instead of shearing the short chin-to-throat one.
    head = smoothstep((y + 0.3 * np.clip(p[:, 2], 0, None) - 0.215) / 0.075)
    w *= (1 - head)[:, None]
    w[:, JOINT_INDEX['head']] += head
    # Shoulder tops follow the collars; the chin and lower face follow the jaw.
    collar = smoothstep((np.abs(p[:, 0]) - 0.07) / 0.08) * smoothstep((y - 0.02) / 0.06) * (y < 0.19)
    side = np.where(p[:, 0] > 0, JOINT_INDEX['left_collar'], JOINT_INDEX['right_collar'])
    w *= (1 - collar)[:, None]
    w[np.arange(len(p)), side] += collar
    jaw = smoothstep((0.266 - y) / 0.01) * smoothstep((p[:, 2] - 0.03) / 0.02) * smoothstep((y - 0.235) / 0.01)
    w *= (1 - jaw)[:, None]
    w[:, JOINT_INDEX['jaw']] += jaw
    # The buttocks and groin partly follow the thighs, so a flexed hip does not leave the pelvis behind.
    hip = 0.5 * smoothstep((-0.40 - y) / 0.06) * smoothstep((np.abs(p[:, 0]) - 0.02) / 0.05)
    w *= (1 - hip)[:, None]
    w[np.arange(len(p)), np.where(p[:, 0] > 0, JOINT_INDEX['left_hip'], JOINT_INDEX['right_hip'])] += hip
    return w


# Arm profile: x -> centre y, centre z, half-height (y), half-width (z), blend of the palm layout.
_ARM = np.array([
    [0.085, 0.125, -0.020, 0.030, 0.030, 0.0], [0.10, 0.125, -0.020, 0.048, 0.050, 0.0],
    [0.15, 0.125, -0.020, 0.057, 0.058, 0.0], [0.21, 0.122, -0.020, 0.054, 0.052, 0.0],
    [0.30, 0.120, -0.022, 0.046, 0.044, 0.0], [0.40, 0.120, -0.025, 0.040, 0.039, 0.0],
    [0.45, 0.120, -0.025, 0.036, 0.037, 0.0], [0.51, 0.120, -0.025, 0.038, 0.042, 0.0],
    [0.60, 0.120, -0.022, 0.031, 0.036, 0.0], [0.68, 0.120, -0.020, 0.022, 0.030, 0.1],
    [0.70, 0.120, -0.020, 0.020, 0.033, 0.35], [0.725, 0.119, -0.020, 0.016, 0.042, 0.9],
    [0.75, 0.118, -0.020, 0.015, 0.044, 1.0], [0.787, 0.117, -0.020, 0.012, 0.043, 1.0]])
_CAP_A, _CAP_B = 13, 2  # palm end grid: 13 quads across the hand, 2 through its thickness
# (finger, first cap column, direction z-spread, phalanx lengths, base/tip radius)
_FINGERS = (('index', 10, 0.07, (0.040, 0.025, 0.022), (0.0086, 0.0070)),
            ('middle', 7, 0.02, (0.044, 0.028, 0.024), (0.0088, 0.0072)),
            ('ring', 4, -0.03, (0.041, 0.027, 0.023), (0.0083, 0.0068)),
            ('pinky', 1, -0.08, (0.033, 0.021, 0.020), (0.0073, 0.0060)))


def _cap_border() -> list[tuple[int, int]]:
    """Cap-grid (column, row) of each arm-ring vertex, in increasing angle from the thumb side's middle."""
    a = _CAP_A
    return ([(a, 1), (a, 0)] + [(c, 0) for c in range(a - 1, -1, -1)] + [(0, 1), (0, 2)]
            + [(c, 2) for c in range(1, a + 1)])


def build_arm(n_upper: int, finger_rings: int, joints: dict) -> Part:
    """Left arm: shoulder-to-palm sweep, palm-end grid with four glued fingers, thumb glued to the side.
    Adds the finger joints it places to ``joints``."""
    prof = PchipInterpolator(_ARM[:, 0], _ARM[:, 1:], axis=0)
    xs = np.concatenate([stations(prof, 0.085, 0.70, n_upper, (2, 3))[:-1],
                         [0.70, 0.712, 0.724, 0.736, 0.75, 0.768, 0.787]])
    border = _cap_border()
    n = len(border)
    uv = np.array([(2 * c / _CAP_A - 1, 1 - r) for c, r in border], float)  # u across (z), v up (y)
    uv *= (np.abs(uv).max(1) / (np.abs(uv) ** 4).sum(1) ** 0.25)[:, None]  # squircle corners
    phi = 2 * np.pi * np.arange(n) / n
    yc, zc, ry, rz, blend = prof(xs).T
    lay = (1 - blend[:, None, None]) * np.stack([np.cos(phi), np.sin(phi)], -1)[None] + blend[:, None, None] * uv
    rings = np.stack([xs[:, None].repeat(n, 1), yc[:, None] + ry[:, None] * lay[..., 1],
                      zc[:, None] + rz[:, None] * lay[..., 0]], -1)
    wfn = lambda p: chain_weights(p[:, 0], [0.15, 0.45, 0.70],  # noqa: E731
                                  ['left_collar', 'left_shoulder', 'left_elbow', 'left_wrist'], 0.03)
    part = Part('arm_l')
    lo = np.array([0.075, yc[0], zc[0]])
    idx, rows = sweep(part, rings, np.stack([xs, yc, zc], -1), wfn(rings.reshape(-1, 3)), lo, None, wfn(lo[None])[0])
    # Palm end: a (13 x 2)-quad grid whose border is the last ring; its middle row bulges slightly.
    grid = -np.ones((_CAP_A + 1, _CAP_B + 1), np.int64)
    for j, (c, r) in enumerate(border):
        grid[c, r] = idx[-1, j]
    u = 2 * np.arange(1, _CAP_A) / _CAP_A - 1
    inner = np.stack([xs[-1] + 0.004 * (1 - u ** 2), np.full_like(u, yc[-1]), zc[-1] + rz[-1] * u], -1)
    grid[1:_CAP_A, 1] = part.add(inner, inner, wfn(inner))
    g00, g10, g11, g01 = grid[:-1, :-1], grid[1:, :-1], grid[1:, 1:], grid[:-1, 1:]
    cap_rows = part.add_faces(np.stack([np.stack([g00, g10, g11], -1), np.stack([g00, g11, g01], -1)], 2))
    cap_rows = cap_rows.reshape(_CAP_A, _CAP_B, 2)
    for name, c0, spread, lengths, (r0, r1) in _FINGERS:
        loop = part.cut(cap_rows[c0:c0 + 2].ravel())
        d = np.array([1.0, -0.02, spread]) / np.linalg.norm([1.0, -0.02, spread])
        base = part.pos[loop].mean(0)
        knots = np.cumsum([-0.008, *lengths])  # MCP sits 8 mm inside the palm
        names = ['left_wrist'] + [f'left_{name}{k}' for k in (1, 2, 3)]
        for k in range(3):
            joints[f'left_{name}{k + 1}'] = base + knots[k] * d
        ts = np.linspace(0.006, knots[-1] - 0.3 * r1, finger_rings)
        radii = np.interp(ts, [0, knots[-1]], [r0, r1]) * np.where(ts > knots[-1] - r1, 0.8, 1.0)
        tip = tube(part, loop, d, ts, radii, knots[-1],
                   lambda t, kn=knots, nm=names: chain_weights(t, list(kn[:3]), nm, 0.007))
        part.named['l' + name] = tip
    # Thumb: out of the thumb-side face near the wrist, angled forward and a little palm-wards.
    loop = part.cut(rows[len(xs) - 6:len(xs) - 4][:, [n - 1, 0]].ravel())  # rings at x = 0.712-0.736
    d = np.array([0.62, -0.18, 0.76]) / np.linalg.norm([0.62, -0.18, 0.76])
    base = part.pos[loop].mean(0)
    knots = np.array([-0.018, 0.022, 0.050, 0.076])
    names = ['left_wrist', 'left_thumb1', 'left_thumb2', 'left_thumb3']
    for k in range(3):
        joints[f'left_thumb{k + 1}'] = base + knots[k] * d
    ts = np.linspace(0.006, knots[-1] - 0.0025, finger_rings)
    radii = np.interp(ts, [0, knots[-1]], [0.0105, 0.0078]) * np.where(ts > knots[-1] - 0.008, 0.8, 1.0)
    part.named['lthumb'] = tube(part, loop, d, ts, radii, knots[-1],
                                lambda t: chain_weights(t, list(knots[:3]), names, 0.008))
    return part


# Leg profile: y -> centre x, centre z, half-width front/back, half-depth front/back, superellipse exponent.
_LEG = np.array([
    [-1.285, 0.094, 0.068, 0.048, 0.034, 0.128, 0.120, 2.5], [-1.276, 0.094, 0.068, 0.050, 0.036, 0.133, 0.125, 2.5],
    [-1.262, 0.093, 0.062, 0.049, 0.036, 0.128, 0.118, 2.4], [-1.245, 0.091, 0.040, 0.046, 0.036, 0.105, 0.090, 2.3],
    [-1.225, 0.089, 0.010, 0.040, 0.036, 0.068, 0.055, 2.2], [-1.20, 0.088, -0.010, 0.034, 0.034, 0.042, 0.040, 2.1],
    [-1.16, 0.088, -0.012, 0.030, 0.030, 0.031, 0.032, 2.0], [-1.06, 0.091, -0.008, 0.037, 0.037, 0.036, 0.040, 2.0],
    [-0.93, 0.096, -0.004, 0.050, 0.050, 0.044, 0.060, 2.1], [-0.84, 0.099, 0.002, 0.049, 0.049, 0.047, 0.054, 2.1],
    [-0.78, 0.100, 0.010, 0.051, 0.051, 0.053, 0.047, 2.2], [-0.73, 0.098, 0.012, 0.056, 0.056, 0.056, 0.052, 2.1],
    [-0.62, 0.093, 0.012, 0.068, 0.068, 0.066, 0.064, 2.1], [-0.50, 0.089, 0.010, 0.080, 0.080, 0.077, 0.080, 2.1],
    [-0.42, 0.086, 0.008, 0.083, 0.083, 0.080, 0.085, 2.1], [-0.36, 0.085, 0.005, 0.065, 0.065, 0.065, 0.068, 2.0],
    [-0.335, 0.085, 0.005, 0.035, 0.035, 0.035, 0.035, 2.0]])
_LEG_N = 32


def build_leg(n: int) -> Part:
    """Left leg: a sweep of horizontal slices from inside the pelvis to a flat sole, the foot included."""
    prof = PchipInterpolator(_LEG[:, 0], _LEG[:, 1:], axis=0)
    ys = stations(prof, -0.335, -1.285, n, (2, 4))
    cx, cz, axf, axb, azf, azb, p = prof(ys).T
    theta = 2 * np.pi * np.arange(_LEG_N) / _LEG_N
    cc, ss = superellipse(theta[None], p[:, None])
    fb = (1 + np.sin(theta)[None]) / 2  # 1 at the front (toes), 0 at the back (heel)
    ax, az = axb[:, None] + (axf - axb)[:, None] * fb, azb[:, None] + (azf - azb)[:, None] * fb
    rings = np.stack([cx[:, None] + ax * cc, ys[:, None].repeat(_LEG_N, 1), cz[:, None] + az * ss], -1)
    centers = np.stack([cx, ys, cz], -1)
    sole = np.stack([centers[-1] + s * (rings[-1] - centers[-1]) for s in (0.62, 0.28)])
    rings, centers = np.concatenate([rings, sole]), np.concatenate([centers, centers[-1:].repeat(2, 0)])

    def wfn(q: np.ndarray) -> np.ndarray:
        w = chain_weights(-q[:, 1], [0.78, 1.20], ['left_hip', 'left_knee', 'left_ankle'], 0.035)
        toes = smoothstep((q[:, 2] - 0.085) / 0.04) * smoothstep((-1.215 - q[:, 1]) / 0.02)
        w *= (1 - toes)[:, None]
        w[:, JOINT_INDEX['left_foot']] += toes
        return w

    part = Part('leg_l')
    top, bottom = np.array([cx[0], -0.325, cz[0]]), centers[-1]
    sweep(part, rings, centers, wfn(rings.reshape(-1, 3)), top, bottom, wfn(top[None])[0], wfn(bottom[None])[0])
    low = n - 1  # the ring just above the sole
    base = low * _LEG_N
    part.named.update(LBigToe=base + round(_LEG_N * 112.5 / 360), LSmallToe=base + round(_LEG_N * 45 / 360),
                      LHeel=base + round(_LEG_N * 270 / 360))
    return part


def build_eyeball(center: np.ndarray, radius: float, lat: int, lon: int) -> Part:
    """A UV sphere with its poles on the z axis; the front pole is the pupil (the ``leye`` keypoint)."""
    polar = np.linspace(0, np.pi, lat + 2)[1:-1]
    az = 2 * np.pi * np.arange(lon) / lon
    dirs = np.stack([np.sin(polar)[:, None] * np.cos(az), np.sin(polar)[:, None] * np.sin(az),
                     np.cos(polar)[:, None].repeat(lon, 1)], -1)
    part = Part('eye_l')
    w = onehot(lat * lon, 'left_eye_smplhf').reshape(lat, lon, NUM_JOINTS)
    front, back = center + [0, 0, radius], center - [0, 0, radius]
    sweep(part, center + radius * dirs, np.repeat(center[None], lat, 0), w, front, back,
          onehot(1, 'left_eye_smplhf')[0], onehot(1, 'left_eye_smplhf')[0])
    part.named['leye'] = lat * lon  # the first pole added: the front one
    return part
