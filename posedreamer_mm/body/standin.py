"""An open SMPL-X **stand-in**: a procedural mannequin written in the exact SMPL-X ``.npz`` layout.

This is NOT SMPL-X and carries none of its data or licence. It exists so that tests, demos and CI can run the
whole pipeline (body-model forward, rendering, keypoints, HMR training) without the licensed model files. The
file has every key and shape that ``smplx`` 0.1.28 reads (``v_template (10475, 3)``, ``f (20908, 3)``, 55 joints
with the real SMPL-X kinematic tree, ``shapedirs (V, 3, 300 + 100)``, ...), so ``smplx.create`` loads it unchanged.

The mannequin (canonical frame: y up, x = the person's left, facing +z, metres, T-pose as SMPL-X):

- One trunk surface from crotch to crown (pelvis, waist, chest, shoulders, neck, head with nose, ears, eye and
  mouth openings), two arms ending in palms with five glued-on fingers, two legs ending in feet, two eyeballs:
  7 closed, consistently outward-wound parts. The eye and mouth openings are the only boundaries (20 edges),
  which is what makes ``2V - F = 42`` hold at the real mesh's 10475 vertices and 20908 faces.
- Joints at human proportions (1.72 m; soles at y = -1.285, crown at +0.44, pelvis at the real model's
  ``(0.003, -0.351, 0.012)``); ``J_regressor`` reproduces them exactly from ``v_template``.
- Skinning weights follow the body part, blended over a few centimetres at each joint.
- The vertices ``smplx.vertex_ids['smplx']`` reads (nose, eyes, ears, toes, heels, fingertips) are permuted to
  those indices, so the standard 127-joint output has face, foot and fingertip keypoints on the right parts.
- ``shapedirs``: component 0 is height, 1 girth, 2-8 shoulder width, hip width, leg length, arm length, head
  size, belly, neck length; 9-15 small smooth deformations; 16-299 are zero. Expression components move face
  vertices by millimetres. ``posedirs`` are zero (no pose correctives).

The mesh toolkit lives in :mod:`._standin_mesh`, the parts in :mod:`._standin_parts`; this module assembles
them and adds what ``smplx`` reads besides the mesh (skinning, regressor, blend shapes, landmarks).
"""
from __future__ import annotations

import logging
import os
import pathlib
import shutil
from collections.abc import Sequence

import numpy as np
from scipy.optimize import nnls

from ._standin_mesh import JOINT_NAMES_55, NUM_FACES, NUM_JOINTS, NUM_VERTS, PARENTS, smoothstep
from ._standin_parts import BODY_JOINTS, build_arm, build_eyeball, build_leg, build_trunk

logger = logging.getLogger(__name__)
GENDERS = ('neutral', 'male', 'female')

STANDIN_NOTE = ('posedreamer_mm SMPL-X stand-in: a procedural mannequin in the SMPL-X npz layout, NOT the SMPL-X '
                'model (https://smpl-x.is.tue.mpg.de). For tests and demos only.')
#: Copy of ``smplx.vertex_ids.vertex_ids['smplx']`` (a test checks they agree) so generation needs no torch.
SMPLX_VERTEX_IDS = dict(nose=9120, reye=9929, leye=9448, rear=616, lear=6, rthumb=8079, rindex=7669, rmiddle=7794,
                        rring=7905, rpinky=8022, lthumb=5361, lindex=4933, lmiddle=5058, lring=5169, lpinky=5286,
                        LBigToe=5770, LSmallToe=5780, LHeel=8846, RBigToe=8463, RSmallToe=8474, RHeel=8635)


# Resolution: chosen so the vertex count is exactly 10475 (faces then follow from the topology).
_RES = dict(trunk=(69, 6, 9), arm=23, finger=7, leg=55, eye=(6, 12))


def build_standin(gender: str = 'neutral', num_betas: int = 300, num_expression: int = 100,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Builds the stand-in's arrays (the ``.npz`` content) in memory.

    Args:
        gender: ``'neutral'``, ``'male'`` or ``'female'`` (the latter two shift proportions via shape components).
        num_betas: Shape components stored (300 in SMPL-X v1.1).
        num_expression: Expression components stored after them (100 in SMPL-X v1.1).
        seed: Seeds the smooth random shape/expression components and the hand PCA basis.

    Returns:
        Dict of numpy arrays with the SMPL-X npz keys (see the module docstring).
    """
    if gender not in ('neutral', 'male', 'female'):
        raise ValueError(f"gender must be 'neutral', 'male' or 'female', got {gender!r}")
    rng = np.random.default_rng(seed)
    joints = {k: np.array(v, float) for k, v in BODY_JOINTS.items()}
    trunk, holes = build_trunk(_RES['trunk'])
    arm = build_arm(_RES['arm'], _RES['finger'], joints)
    leg = build_leg(_RES['leg'])
    eye_c = trunk.pos[holes['l']].mean(0) - [0.0, 0.0, 0.0105]  # sunk so the lids (hole rim) frame it
    joints['left_eye_smplhf'] = eye_c
    eye = build_eyeball(eye_c, 0.0125, *_RES['eye'])
    parts = []
    for part in (trunk, arm, leg, eye):
        part.compact()
        if part.signed_volume() < 0:
            part.faces = part.faces[:, [0, 2, 1]]
        parts.append(part)
        if part is not trunk:
            parts.append(part.mirrored(part.name[:-1] + 'r'))
    for name in list(joints):
        if name.startswith('left'):
            joints['right' + name[4:]] = joints[name] * [-1.0, 1.0, 1.0]
    offsets = np.cumsum([0] + [len(p.pos) for p in parts])
    pos = np.concatenate([p.pos for p in parts])
    assert len(pos) == NUM_VERTS, f'stand-in resolution gives {len(pos)} vertices, need {NUM_VERTS}'
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    label = np.concatenate([np.full(len(p.pos), i) for i, p in enumerate(parts)])
    # Permute so the fixed keypoint vertices of smplx.vertex_ids land at their indices; keep the rest in order.
    named = {k: v + o for p, o in zip(parts, offsets) for k, v in p.named.items()}
    order = -np.ones(NUM_VERTS, np.int64)  # order[new] = old
    for key, new in SMPLX_VERTEX_IDS.items():
        order[new] = named[key]
    order[order < 0] = np.setdiff1d(np.arange(NUM_VERTS), order[order >= 0])
    inv = np.argsort(order)
    pos, faces, label = pos[order], inv[faces], label[order]
    center = np.concatenate([p.center for p in parts])[order]
    weights = np.concatenate([p.weights for p in parts])[order]
    weights /= weights.sum(1, keepdims=True)
    names = [p.name for p in parts]
    jpos = np.stack([joints[n] for n in JOINT_NAMES_55])
    regressor = _joint_regressor(pos, jpos, label, names)
    shapedirs = np.concatenate([_shape_dirs(pos, center, label, names, jpos, num_betas, rng),
                                _expression_dirs(pos, center, label, names, num_expression, rng)], -1)
    v_template = pos.copy()
    if gender != 'neutral':  # sexes as fixed offsets in the shape space: height, girth, shoulders, hips
        coef = np.zeros(shapedirs.shape[-1])
        coef[:4] = (0.7, 0.1, 0.9, -0.3) if gender == 'male' else (-0.8, -0.2, -0.8, 0.9)
        v_template += shapedirs @ coef
    comps = np.linalg.qr(rng.standard_normal((45, 45)))[0].T  # an orthonormal hand "PCA" basis
    return dict(
        v_template=v_template.astype(np.float32), f=faces.astype(np.int32),
        weights=weights.astype(np.float32), J_regressor=regressor.astype(np.float32),
        kintree_table=np.stack([PARENTS, np.arange(NUM_JOINTS)]), shapedirs=shapedirs.astype(np.float32),
        posedirs=np.zeros((NUM_VERTS, 3, 9 * (NUM_JOINTS - 1)), np.float32),
        hands_componentsl=comps.astype(np.float32), hands_componentsr=comps.astype(np.float32),
        hands_meanl=_hand_mean(-1.0), hands_meanr=_hand_mean(1.0),
        **_landmarks(pos, faces, label, names.index('trunk')),
        standin_note=np.array(STANDIN_NOTE))


def _hand_mean(sign: float) -> np.ndarray:
    """A relaxed curl: each finger joint flexes palm-wards (about z; sign -1 for the left, +1 for the right)."""
    mean = np.zeros((15, 3), np.float32)
    mean[:, 2] = sign * np.array([0.15, 0.25, 0.2] * 4 + [0.05, 0.1, 0.1])
    return mean.ravel()


def _joint_regressor(pos, jpos, label, names) -> np.ndarray:
    """Each joint as a convex combination of nearby vertices of its body part, exact on ``v_template``."""
    part_of = {n: 'trunk' for n in JOINT_NAMES_55}
    for n in JOINT_NAMES_55:
        side = 'l' if n.startswith('left') else 'r'
        if any(k in n for k in ('hip', 'knee', 'ankle', 'foot')):
            part_of[n] = 'leg_' + side
        elif any(k in n for k in ('shoulder', 'elbow', 'wrist', 'index', 'middle', 'ring', 'pinky', 'thumb')):
            part_of[n] = 'arm_' + side
        elif 'eye' in n:
            part_of[n] = 'eye_' + side
    reg = np.zeros((NUM_JOINTS, len(pos)))
    for j, n in enumerate(JOINT_NAMES_55):
        cand = np.flatnonzero(label == names.index(part_of[n]))
        for k in (24, 64, 160, 400):
            near = cand[np.argsort(np.linalg.norm(pos[cand] - jpos[j], axis=1))[:k]]
            a = np.concatenate([pos[near].T, 10 * np.ones((1, len(near)))])
            w, res = nnls(a, np.concatenate([jpos[j], [10.0]]))
            if res < 1e-9:
                break
        else:  # not inside any hull: minimum-norm affine weights (still exact)
            w = np.linalg.pinv(a) @ np.concatenate([jpos[j], [10.0]])
        reg[j, near] = w
    return reg


def _smooth_field(pos: np.ndarray, rng: np.random.Generator, wavelength: float) -> np.ndarray:
    """A smooth random ``(V, 3)`` displacement field of unit-ish amplitude (three random plane waves)."""
    out = np.zeros_like(pos)
    for _ in range(3):
        k = rng.standard_normal(3) * 2 * np.pi / wavelength
        out += rng.standard_normal(3) * np.sin(pos @ k + rng.uniform(0, 2 * np.pi))[:, None]
    return out / 3


def _shape_dirs(pos, center, label, names, jpos, num: int, rng) -> np.ndarray:
    """``(V, 3, num)``; positive coefficients make the body taller, wider, longer, bigger."""
    x, y, z = pos.T
    part = np.array(names)[label]
    arm, leg, trunk = np.char.startswith(part, 'arm'), np.char.startswith(part, 'leg'), part == 'trunk'
    head = (trunk & (y > 0.2)) | np.char.startswith(part, 'eye')
    sx = np.sign(x)
    radial = pos - center
    d = np.zeros((len(pos), 3, max(num, 16)))
    d[..., 0] = (pos - jpos[0]) * [0.3, 1.0, 0.3] * 0.035  # height: ~6 cm per unit
    d[..., 1] = radial * 0.12 * ((trunk & (y < 0.19)) | leg | (arm & (np.abs(x) < 0.69)))[:, None]
    upper = smoothstep(y / 0.1) * (y < 0.2)
    d[:, 0, 2] = 0.018 * (arm * sx + trunk * x / 0.17 * upper)  # shoulder width
    d[:, 0, 3] = 0.015 * (leg * sx + trunk * x / 0.17 * smoothstep((-0.2 - y) / 0.1))  # hip width
    d[:, 1, 4] = -0.05 * leg * np.clip((-0.44 - y) / 0.845, 0, 1)  # leg length
    d[:, 0, 5] = 0.04 * arm * sx * np.clip((np.abs(x) - 0.18) / 0.52, 0, 1)  # arm length
    d[..., 6] = 0.06 * (pos - [0.0, 0.33, 0.01]) * (head * smoothstep((y - 0.2) / 0.04))[:, None]  # head size
    d[:, 2, 7] = 0.025 * trunk * np.exp(-0.5 * ((y + 0.12) / 0.09) ** 2) * np.clip(radial[:, 2] / 0.1, 0, 1)
    d[:, 1, 8] = 0.015 * (head | trunk) * smoothstep((y - 0.17) / 0.08)  # neck length
    for k in range(9, 16):
        d[..., k] = 0.004 / (1 + 0.3 * (k - 9)) * _smooth_field(pos, rng, 0.6)
    return d[..., :num]


def _expression_dirs(pos, center, label, names, num: int, rng) -> np.ndarray:
    """``(V, 3, num)`` millimetre-scale face motions (jaw drop, smile, brows, cheeks, pucker, then random)."""
    x, y, _ = pos.T
    face = (label == names.index('trunk')) & (y > 0.235) & ((pos - center)[:, 2] > 0.03)
    g = lambda cx, cy, s: np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / s ** 2)  # noqa: E731
    d = np.zeros((len(pos), 3, max(num, 5)))
    d[:, 1, 0] = -0.006 * smoothstep((0.266 - y) / 0.02)
    d[..., 1] = ((g(0.022, 0.268, 0.01) - g(-0.022, 0.268, 0.01))[:, None] * [0.002, 0, 0]
                 + (g(0.022, 0.268, 0.01) + g(-0.022, 0.268, 0.01))[:, None] * [0, 0.003, -0.001])
    d[:, 1, 2] = 0.003 * np.exp(-0.5 * ((y - 0.362) / 0.012) ** 2) * (np.abs(x) > 0.01)
    d[..., 3] = (g(0.04, 0.29, 0.015) + g(-0.04, 0.29, 0.015))[:, None] * np.stack(
        [0.002 * np.sign(x), 0 * x, 0.002 + 0 * x], -1)
    d[..., 4] = g(0.0, 0.268, 0.012)[:, None] * np.stack([-0.3 * x, 0 * x, 0.004 + 0 * x], -1)
    for k in range(5, num):
        d[..., k] = 0.002 / (1 + 0.05 * k) * _smooth_field(pos, rng, 0.08)
    return (d * face[:, None, None])[..., :num]


# The 51 static landmarks, in smplx's order (JOINT_NAMES[76:127]), as (x, y) targets on the face (metres).
_LMK = dict(
    right_eye_brow1=(-0.055, 0.362), right_eye_brow2=(-0.045, 0.366), right_eye_brow3=(-0.035, 0.368),
    right_eye_brow4=(-0.025, 0.367), right_eye_brow5=(-0.015, 0.364), left_eye_brow5=(0.015, 0.364),
    left_eye_brow4=(0.025, 0.367), left_eye_brow3=(0.035, 0.368), left_eye_brow2=(0.045, 0.366),
    left_eye_brow1=(0.055, 0.362), nose1=(0.0, 0.345), nose2=(0.0, 0.333), nose3=(0.0, 0.320), nose4=(0.0, 0.307),
    right_nose_2=(-0.016, 0.295), right_nose_1=(-0.008, 0.293), nose_middle=(0.0, 0.292),
    left_nose_1=(0.008, 0.293), left_nose_2=(0.016, 0.295),
    right_eye1=(-0.045, 0.346), right_eye2=(-0.037, 0.352), right_eye3=(-0.027, 0.352),
    right_eye4=(-0.019, 0.346), right_eye5=(-0.027, 0.340), right_eye6=(-0.037, 0.340),
    left_eye4=(0.019, 0.346), left_eye3=(0.027, 0.352), left_eye2=(0.037, 0.352), left_eye1=(0.045, 0.346),
    left_eye6=(0.037, 0.340), left_eye5=(0.027, 0.340),
    right_mouth_1=(-0.025, 0.268), right_mouth_2=(-0.016, 0.274), right_mouth_3=(-0.006, 0.277),
    mouth_top=(0.0, 0.277), left_mouth_3=(0.006, 0.277), left_mouth_2=(0.016, 0.274), left_mouth_1=(0.025, 0.268),
    left_mouth_5=(0.016, 0.261), left_mouth_4=(0.006, 0.259), mouth_bottom=(0.0, 0.258),
    right_mouth_4=(-0.006, 0.259), right_mouth_5=(-0.016, 0.261), right_lip_1=(-0.02, 0.268),
    right_lip_2=(-0.008, 0.272), lip_top=(0.0, 0.272), left_lip_2=(0.008, 0.272), left_lip_1=(0.02, 0.268),
    left_lip_3=(0.008, 0.264), lip_bottom=(0.0, 0.264), right_lip_3=(-0.008, 0.264))


def _landmarks(pos, faces, label, trunk_label: int) -> dict[str, np.ndarray]:
    """Landmark faces: the front-facing head face nearest each target (static 51), and a 17-point jaw contour
    (the same for all 79 yaw bins: the stand-in has no per-yaw silhouette table)."""
    cent = pos[faces].mean(1)
    normal = np.cross(pos[faces[:, 1]] - pos[faces[:, 0]], pos[faces[:, 2]] - pos[faces[:, 0]])
    head = (label[faces[:, 0]] == trunk_label) & (cent[:, 1] > 0.22)
    front = np.flatnonzero(head & (normal[:, 2] > 0.3 * np.linalg.norm(normal, axis=1)))
    targets = np.array(list(_LMK.values()))
    static = front[np.argmin(((cent[front, None, :2] - targets[None]) ** 2).sum(-1), axis=0)]
    a = np.linspace(-np.pi / 2, np.pi / 2, 17)  # subject's right ear -> chin -> left ear
    jaw = np.stack([0.072 * np.sin(a), 0.30 - 0.065 * np.cos(a), 0.01 + 0.09 * np.cos(a)], -1)
    headf = np.flatnonzero(head)
    contour = headf[np.argmin(((cent[headf, None] - jaw[None]) ** 2).sum(-1), axis=0)]
    third = np.full(3, 1 / 3, np.float32)
    return dict(lmk_faces_idx=static.astype(np.int64), lmk_bary_coords=np.tile(third, (51, 1)),
                dynamic_lmk_faces_idx=np.tile(contour, (79, 1)).astype(np.int64),
                dynamic_lmk_bary_coords=np.tile(third, (79, 17, 1)))


def write_standin_smplx(out_dir: str | os.PathLike, gender: str = 'neutral', num_betas: int = 300,
                        num_expression: int = 100, seed: int = 0) -> pathlib.Path:
    """Writes the stand-in as ``<out_dir>/SMPLX_<GENDER>.npz`` (and ``<out_dir>/smplx/SMPLX_<GENDER>.npz``).

    Both layouts load: :class:`~posedreamer_mm.body.body_model.SMPLXBodyModel` accepts the directory or the
    file; ``smplx.create(model_path=out_dir, model_type='smplx')`` looks in ``out_dir/smplx/`` (the copy there
    is a symlink where the filesystem allows). Deterministic for a given seed; takes about a second.

    The file appears atomically (``utils.fileio.atomic_write``: a temporary beside it, renamed when complete), so
    a run killed mid-write leaves no truncated model for the next run to trust.

    Args:
        out_dir: Directory to write to (created if missing).
        gender: ``'neutral'``, ``'male'`` or ``'female'``.
        num_betas: Shape components (300 as in SMPL-X v1.1).
        num_expression: Expression components (100 as in SMPL-X v1.1).
        seed: Seed of the random smooth components.

    Returns:
        Path of the written ``SMPLX_<GENDER>.npz``.
    """
    from posedreamer_mm.utils.fileio import atomic_write
    if gender not in GENDERS:
        raise ValueError(f'gender must be one of {GENDERS}, got {gender!r}')
    out_dir = pathlib.Path(out_dir)
    (out_dir / 'smplx').mkdir(parents=True, exist_ok=True)
    path = out_dir / f'SMPLX_{gender.upper()}.npz'
    arrays = build_standin(gender, num_betas, num_expression, seed)
    with atomic_write(path, 'wb') as f:
        np.savez_compressed(f, **arrays)
    link = out_dir / 'smplx' / path.name
    if not (link.is_symlink() and os.readlink(link) == os.path.join('..', path.name)):
        tmp_link = link.with_name(f'.{link.name}.tmp-link-{os.getpid()}')
        tmp_link.unlink(missing_ok=True)
        try:
            tmp_link.symlink_to(os.path.join('..', path.name))
            os.replace(tmp_link, link)
        except OSError:
            tmp_link.unlink(missing_ok=True)
            with atomic_write(link, 'wb') as f, open(path, 'rb') as src:
                shutil.copyfileobj(src, f)
    logger.info('wrote the SMPL-X stand-in (not SMPL-X) to %s', path)
    return path


def ensure_standin_smplx(out_dir: str | os.PathLike, genders: Sequence[str] = ('neutral',),
                         **kwargs) -> dict[str, pathlib.Path]:
    """The stand-in files for ``genders`` in ``out_dir``: each kept if it passes
    :func:`~posedreamer_mm.body.body_model.check_model_file`, (re)written if missing or unreadable.

    Use this instead of "write if the file does not exist": a file a killed run left behind (impossible with
    :func:`write_standin_smplx`'s atomic write, but possible from other tools or a full disk) is rewritten, not
    trusted.

    Args:
        out_dir: Directory of the stand-in.
        genders: Genders needed (any of ``'neutral'``, ``'male'``, ``'female'``).
        **kwargs: Passed to :func:`write_standin_smplx` (``num_betas``, ``num_expression``, ``seed``).

    Returns:
        ``{gender: path}``.
    """
    from .body_model import BodyModelFileError, check_model_file
    out = {}
    for gender in dict.fromkeys(genders):
        path = pathlib.Path(out_dir) / f'SMPLX_{str(gender).upper()}.npz'
        try:
            check_model_file(path)
            with np.load(path, allow_pickle=False) as data:
                if 'standin_note' not in data.files:
                    raise BodyModelFileError(f'{path} is not the stand-in')
        except (BodyModelFileError, OSError, ValueError):
            if path.exists():
                logger.warning('rewriting the unreadable or foreign stand-in file %s', path)
            path = write_standin_smplx(out_dir, gender, **kwargs)
        out[gender] = path
    return out


#: Stand-in directories already announced in this process (the WARNING is logged once per directory).
_announced: set[str] = set()


def standin_dir() -> str:
    """Directory of the stand-in that ``model_path=None`` means: ``$PDM_STANDIN_DIR``, by default
    ``~/.cache/posedreamer_mm/smplx_standin``."""
    return os.environ.get('PDM_STANDIN_DIR') or os.path.join(os.path.expanduser('~'), '.cache', 'posedreamer_mm',
                                                             'smplx_standin')


def standin_model_dir(gender: str = 'neutral') -> str:
    """What ``SMPLXBodyModel(model_path=None)`` loads: :func:`standin_dir` with ``gender``'s file checked or written
    (:func:`ensure_standin_smplx`; concurrent writers are safe, the write is atomic and the bytes the same).

    Logged as a WARNING once per process: labels made with it are a mannequin's, not SMPL-X's.
    """
    out = standin_dir()
    ensure_standin_smplx(out, (gender,))
    if out not in _announced:
        _announced.add(out)
        from mmengine.logging import print_log
        print_log(f'model_path is None: using the open SMPL-X STAND-IN in {out} (a procedural mannequin in the '
                  'SMPL-X file format, NOT the licensed SMPL-X model; set body_model_dir for real labels)',
                  logger='current', level=logging.WARNING)
    return out


__all__ = ['NUM_FACES', 'NUM_JOINTS', 'NUM_VERTS', 'JOINT_NAMES_55', 'PARENTS', 'SMPLX_VERTEX_IDS', 'STANDIN_NOTE',
           'GENDERS', 'build_standin', 'write_standin_smplx', 'ensure_standin_smplx', 'standin_dir',
           'standin_model_dir']
