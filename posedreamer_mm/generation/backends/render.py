"""The rendering baseline: a lit, clothing-coloured body composited over a procedural background.

Not diffusion and not photorealistic: the offline baseline and the embedded default of the main job, so the
dataset, the scorers and HMR training all run with no downloaded weights. Everything random (background, skin,
clothing, hair, lighting) is drawn from the sample's ``seed`` alone, so a sample's image never depends on its
batch, rank or run.

Clothing follows the body's parts: every vertex takes the region of its dominant joint (skinning weights of the
body model when one is given, else the nearest bone of the posed skeleton): shirt on the trunk and (long sleeves)
the forearms, trousers or shorts from the pelvis down, shoes on the feet, skin on hands, neck and face, and hair
on the top and back of the head.
"""
from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel
from posedreamer_mm.body.joint_maps import SMPLX_JOINT_INDEX, SMPLX_JOINT_NAMES
from posedreamer_mm.registry import BACKENDS
from posedreamer_mm.render import default_rasterizer, lambert

from .base import BaseGenerationBackend

#: Clothing regions, in the order of :data:`REGION_OF_JOINT`'s values.
REGIONS = ('skin', 'hair', 'shirt', 'sleeve', 'trousers', 'shin', 'shoes')
_SHIRT = ('spine1', 'spine2', 'spine3', 'left_collar', 'right_collar', 'left_shoulder', 'right_shoulder')
_TROUSERS = ('pelvis', 'left_hip', 'right_hip')
_SHIN = ('left_knee', 'right_knee')
_SHOES = ('left_ankle', 'right_ankle', 'left_foot', 'right_foot')
_SLEEVE = ('left_elbow', 'right_elbow')
_HEAD = ('head', 'jaw', 'left_eye_smplhf', 'right_eye_smplhf')


def _region_of(name: str) -> str:
    for region, names in (('shirt', _SHIRT), ('trousers', _TROUSERS), ('shin', _SHIN), ('shoes', _SHOES),
                          ('sleeve', _SLEEVE)):
        if name in names:
            return region
    return 'skin'  # neck, head, wrists and fingers


#: Region index (into :data:`REGIONS`) of each of the 55 SMPL-X skeleton joints as a dominant joint.
REGION_OF_JOINT = np.array([REGIONS.index(_region_of(n)) for n in SMPLX_JOINT_NAMES[:55]], np.int64)

#: Bones of the posed skeleton (joint -> child) used when no skinning weights are given; each is labelled with
#: its first joint, as linear blend skinning attaches a limb to the joint that rotates it.
_BONES = [('pelvis', 'spine1'), ('left_hip', 'left_knee'), ('right_hip', 'right_knee'), ('spine1', 'spine2'),
          ('left_knee', 'left_ankle'), ('right_knee', 'right_ankle'), ('spine2', 'spine3'),
          ('left_ankle', 'left_foot'), ('right_ankle', 'right_foot'), ('spine3', 'neck'),
          ('left_foot', 'left_big_toe'), ('right_foot', 'right_big_toe'), ('neck', 'head'),
          ('left_collar', 'left_shoulder'), ('right_collar', 'right_shoulder'), ('head', 'head'),
          ('left_shoulder', 'left_elbow'), ('right_shoulder', 'right_elbow'), ('left_elbow', 'left_wrist'),
          ('right_elbow', 'right_wrist'), ('left_wrist', 'left_middle1'), ('right_wrist', 'right_middle1'),
          ('left_middle1', 'left_middle3'), ('right_middle1', 'right_middle3'), ('left_index1', 'left_index3'),
          ('right_index1', 'right_index3'), ('left_thumb1', 'left_thumb3'), ('right_thumb1', 'right_thumb3'),
          ('left_pinky1', 'left_pinky3'), ('right_pinky1', 'right_pinky3')]
_BONE_IDX = np.array([[SMPLX_JOINT_INDEX[a], SMPLX_JOINT_INDEX[b]] for a, b in _BONES], np.int64)

SKIN_TONES = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 135], [198, 134, 96], [161, 102, 68],
                       [120, 75, 50], [88, 56, 38]], np.float64) / 255
HAIR_COLORS = np.array([[20, 16, 14], [60, 40, 25], [110, 75, 40], [190, 150, 90], [140, 60, 30], [150, 150, 150]],
                       np.float64) / 255


def dominant_joints_from_bones(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """The joint of the nearest bone of the posed skeleton, per vertex (a stand-in for skinning weights).

    Args:
        vertices: (V, 3) posed vertices, metres.
        joints: (J, 3) SMPL-X joints of the same body (J = 127 or 144: skeleton plus vertex-picked points).

    Returns:
        (V,) int index among the 55 skeleton joints.
    """
    v = np.asarray(vertices, np.float32)
    a = np.asarray(joints, np.float32)[_BONE_IDX[:, 0]]                   # (K, 3) bone starts
    ab = np.asarray(joints, np.float32)[_BONE_IDX[:, 1]] - a              # (K, 3) bone vectors
    # Squared distance to the segment: |v - a|^2 - t(2 (v - a).ab - t |ab|^2) with t clipped to [0, 1].
    va_ab = v @ ab.T - (a * ab).sum(1)                                    # (V, K) (v - a) . ab
    t = np.clip(va_ab / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
    va2 = (v * v).sum(1)[:, None] - 2 * v @ a.T + (a * a).sum(1)          # (V, K) |v - a|^2
    dist2 = va2 - t * (2 * va_ab - t * (ab * ab).sum(1))
    return _BONE_IDX[dist2.argmin(1), 0]


def procedural_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A random backdrop: a two-colour gradient with a floor, blurred colour noise, or floor tiles.

    Args:
        rng: the sample's generator.
        size: (H, W).

    Returns:
        (H, W, 3) float64 RGB in [0, 1].
    """
    h, w = size
    kind = rng.integers(3)
    top, bottom = rng.uniform(0.1, 0.95, 3), rng.uniform(0.05, 0.8, 3)
    y = np.linspace(0, 1, h)[:, None, None]
    img = np.broadcast_to((1 - y) * top + y * bottom, (h, w, 3)).copy()
    horizon = int(h * rng.uniform(0.55, 0.85))
    if kind == 0:    # wall and floor
        img[horizon:] = img[horizon:] * rng.uniform(0.5, 0.9)
    elif kind == 1:  # smooth colour noise at a few scales
        for cells in (4, 16):
            noise = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
            img = img + 0.15 * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    else:            # tiled floor seen in perspective below the horizon
        rows = np.arange(h - horizon, dtype=np.float64)[:, None] + 1
        depth = h / rows
        u = (np.arange(w)[None] - w / 2) / rows
        checker = ((np.floor(u * rng.uniform(2, 6)) + np.floor(depth * rng.uniform(1, 3))) % 2)[..., None]
        tile_a, tile_b = rng.uniform(0.2, 0.9, 3), rng.uniform(0.1, 0.7, 3)
        img[horizon:] = checker * tile_a + (1 - checker) * tile_b
    img = img + rng.normal(0, 0.015, img.shape)  # sensor-like grain
    return np.clip(img, 0, 1)


def hair_mask(vertices: np.ndarray, joints: np.ndarray, dominant: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Head vertices covered by hair: above the brow all round, and down the back of the head.

    Args:
        vertices: (V, 3) posed vertices.
        joints: (J, 3) SMPL-X joints.
        dominant: (V,) dominant skeleton joint per vertex.
        rng: the sample's generator (hair length).

    Returns:
        (V,) bool.
    """
    idx = SMPLX_JOINT_INDEX
    head, neck = joints[idx['head']], joints[idx['neck']]
    eyes = (joints[idx['left_eye_smplhf']] + joints[idx['right_eye_smplhf']]) / 2
    up = head - neck
    up /= max(np.linalg.norm(up), 1e-9)
    fwd = eyes - head - np.dot(eyes - head, up) * up
    fwd /= max(np.linalg.norm(fwd), 1e-9)
    rel = vertices - head
    height, front = rel @ up, rel @ fwd
    brow = np.dot(eyes - head, up) + 0.03
    length = rng.uniform(0.0, 0.12)  # how far down the back of the head (and neck) the hair reaches
    on_head = np.isin(dominant, [idx['head'], idx['neck']])
    return on_head & ((height > brow) | ((front < -0.02) & (height > brow - 0.06 - length)))


@BACKENDS.register_module()
class RenderBackend(BaseGenerationBackend):
    """Rendering baseline (not diffusion): a Lambert-lit, clothing-coloured body over a procedural background.

    The image is drawn at the sample's crop camera (``sample.focal``, ``princpt``, ``img_size``), so the label
    fits it exactly. Per sample, from its ``seed``: the background (:func:`procedural_background`), skin tone,
    hair colour and length, shirt/trousers/shoe colours, sleeve and trouser length, light direction, ambient
    level and light tint, and a little per-vertex fabric variation.

    Args:
        batch_size: samples per :meth:`generate` call (rendering is per sample; this only sets the grouping).
        body_model: optional body model whose skinning weights give each vertex its dominant joint: the
            generator's :class:`~posedreamer_mm.body.gendered.GenderedSMPLXBodyModel` (given by the generator
            unless the config sets ``body_model``; its default gender's weights, shared by every gender's mesh), an
            :class:`~posedreamer_mm.body.body_model.SMPLXBodyModel` or a ``BODY_MODELS`` config. ``None``: the
            nearest bone of the posed skeleton (:func:`dominant_joints_from_bones`; close to the skinning except
            near joints).
        ambient: (low, high) range of the ambient light fraction.
        near: rasteriser near plane, metres.
        far: rasteriser far plane, metres.
        device_index: EGL device (``posedreamer_mm.render``), e.g. ``'cuda:0'``.
    """

    name = 'render_baseline'
    control_types: list[str] = []

    def __init__(self, batch_size: int = 8, body_model: Any = None, ambient: Sequence[float] = (0.25, 0.5),
                 near: float = 0.01, far: float = 100.0, device_index: int | str | None = None) -> None:
        super().__init__(batch_size)
        self.body_model_cfg = body_model
        self.ambient = (float(ambient[0]), float(ambient[1]))
        if not 0 <= self.ambient[0] <= self.ambient[1] <= 1:
            raise ValueError(f'ambient must be (low, high) with 0 <= low <= high <= 1, got {ambient}')
        self.near, self.far, self.device_index = float(near), float(far), device_index
        self._skin_joint: np.ndarray | None = None

    def setup(self) -> None:
        """Reads the body model's skinning weights (when one is configured)."""
        if self.body_model_cfg is None or self._skin_joint is not None:
            return
        model = self.body_model_cfg
        if isinstance(model, dict):
            from posedreamer_mm.registry import BODY_MODELS
            model = BODY_MODELS.build(model)
        if isinstance(model, GenderedSMPLXBodyModel):
            model = model.default
        weights = getattr(getattr(model, 'smplx', model), 'lbs_weights', None)
        if weights is None:
            raise ValueError(f'RenderBackend: body model {type(model).__name__} has no skinning weights '
                             '(lbs_weights (V, 55)); pass body_model=None to use the posed skeleton instead')
        self._skin_joint = weights.detach().cpu().numpy().argmax(1)

    def dominant_joints(self, vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """(V,) dominant skeleton joint per vertex: skinning weights if set up with a body model, else bones."""
        if self._skin_joint is not None:
            if len(self._skin_joint) != len(vertices):
                raise ValueError(f'RenderBackend: the body model has {len(self._skin_joint)} vertices but the '
                                 f'sample has {len(vertices)}: give the backend the generator\'s body model')
            return self._skin_joint
        return dominant_joints_from_bones(vertices, joints)

    def vertex_colors(self, vertices: np.ndarray, joints: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(V, 3) float albedo in [0, 1]: a random outfit painted by region, with fabric variation."""
        dominant = self.dominant_joints(vertices, joints)
        region = REGION_OF_JOINT[dominant].copy()
        skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.05)
        palette = {'skin': skin, 'hair': HAIR_COLORS[rng.integers(len(HAIR_COLORS))],
                   'shirt': rng.uniform(0.05, 0.95, 3), 'trousers': rng.uniform(0.05, 0.7, 3),
                   'shoes': rng.uniform(0.02, 0.5, 3) * np.array([1.0, 0.9, 0.8])}
        palette['sleeve'] = palette['shirt'] if rng.random() < 0.5 else skin       # long or short sleeves
        palette['shin'] = palette['trousers'] if rng.random() < 0.75 else skin    # trousers or shorts
        if rng.random() < 0.85:                                                   # else bald
            region[hair_mask(vertices, joints, dominant, rng)] = REGIONS.index('hair')
        table = np.stack([palette[r] for r in REGIONS])
        colors = table[region] * rng.uniform(0.93, 1.0, (len(vertices), 1))
        return np.clip(colors, 0, 1).astype(np.float32)

    def render_one(self, results: dict, size: tuple[int, int]) -> np.ndarray:
        """The image of one results dict at its crop camera: (H, W, 3) uint8 RGB."""
        sample = results['sample']
        vertices = np.asarray(results['vertices'], np.float64)
        joints = np.asarray(results['joints'], np.float64)
        faces = np.asarray(results['faces'], np.int64)
        if not (np.isfinite(vertices).all() and np.isfinite(joints).all()):
            raise ValueError(f'RenderBackend: sample {sample.id!r} has non-finite vertices or joints')
        rng = np.random.default_rng(int(results['seed']) % (2 ** 63))
        h, w = size
        background = procedural_background(rng, (h, w))
        colors = self.vertex_colors(vertices, joints, rng)
        out = default_rasterizer(self.near, self.far, self.device_index).render(
            vertices, faces, sample.focal, sample.princpt, (w, h), colors=colors,
            outputs=('color', 'mask', 'depth', 'normal'))
        # Light from the camera's hemisphere, random side and height; a warm or cool tint.
        light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.3), -rng.uniform(0.4, 1.2)])
        ambient = rng.uniform(*self.ambient)
        tint = np.clip(1 + rng.normal(0, 0.06, 3), 0.8, 1.2)
        body = lambert(out['normal'], out['mask'], out['color'] / 255.0, light, ambient).astype(np.float64) / 255
        image = np.where(out['mask'][..., None], np.clip(body * tint, 0, 1), background)
        return np.round(image * 255).astype(np.uint8)

    def generate(self, batch: list[dict]) -> list[np.ndarray]:
        size = self.check_batch(batch)
        for results in batch:
            missing = [k for k in ('vertices', 'joints', 'faces') if k not in results]
            if missing:
                raise ValueError(f'RenderBackend: sample {results["sample"].id!r} lacks results keys {missing} '
                                 '(the body-model forward transform adds them)')
        return [self.render_one(results, size) for results in batch]

    def record(self) -> dict[str, Any]:
        return {**super().record(), 'kind': 'rendering baseline (not diffusion)',
                'part_labels': 'skinning weights' if self.body_model_cfg is not None else 'nearest bone',
                'ambient': list(self.ambient)}
