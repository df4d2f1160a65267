"""The generator's per-sample transforms before the backend (keys: docs/conventions.md, "The per-sample results dict").

A generation config lists them as the generator's ``pipeline``, as mmpose configs list their transforms::

    pipeline = [
        dict(type='BodyForward'),                                   # gets the generator's body model
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='RenderControls', controls=[dict(type='PNCCRenderer'), dict(type='DepthRenderer')]),
        dict(type='COCO17Visibility', min_visible=8),
        dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic')),
    ]

Each builds its own children from dicts; one that takes ``body_model`` gets the generator's (one
:class:`~posedreamer_mm.body.gendered.GenderedSMPLXBodyModel` per process) unless its config sets one. After the
backend the config's ``stages`` (scoring and filter transforms) run, then the writer. A transform that returns
``None`` drops the sample; it sets ``results['drop_reason']`` first (:func:`drop`), and the generator counts the
drop under that reason. Each class lists the results keys it reads and writes (Required / Optional / Modified /
Added Keys); ``tests/generation/test_transform_keys.py`` checks that it touches no other.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from mmcv.transforms import BaseTransform

from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.registry import PROMPT_SAMPLERS, RENDERERS, TRANSFORMS
from posedreamer_mm.render.base import body_crop_camera, project
from posedreamer_mm.render.geometry import GeometryError, check_render_geometry
from posedreamer_mm.render.visibility import coco17_keypoints

from .steps import build_step


def drop(results: dict, reason: str) -> None:
    """Marks ``results`` as dropped for ``reason`` and returns ``None`` (``return drop(results, 'x')``)."""
    results['drop_reason'] = reason
    return None


def gendered_body_model(body_model: GenderedSMPLXBodyModel | dict | None) -> GenderedSMPLXBodyModel | None:
    """A :class:`GenderedSMPLXBodyModel` from a ``BODY_MODELS`` config (``from_config``) or as given."""
    if isinstance(body_model, dict):
        return GenderedSMPLXBodyModel.from_config(body_model)
    if body_model is not None and not isinstance(body_model, GenderedSMPLXBodyModel):
        raise TypeError(f'body_model must be a BODY_MODELS config or a GenderedSMPLXBodyModel, got '
                        f'{type(body_model).__name__}')
    return body_model


def build_renderer(cfg: dict | Any, body_model: torch.nn.Module | None = None):
    """Builds a control renderer that renders at the camera it is given (``size=None``).

    The crop camera is :class:`BodyCropCamera`'s, so a renderer config must not set its own ``size``/``margin``.
    A renderer whose constructor takes ``body_model`` (PNCC: the canonical body defines its colours) gets
    ``body_model`` unless its config sets one.
    """
    if not isinstance(cfg, dict):
        return cfg
    cfg = dict(cfg)
    for key in ('size', 'margin'):
        if cfg.get(key) is not None:
            raise ValueError(f'control renderer {cfg.get("type")!r} sets {key}={cfg[key]!r}, but BodyCropCamera owns '
                             'the crop camera: set its size / margin in the pipeline instead')
    cfg['size'] = None
    return build_step(RENDERERS, cfg, body_model)


@TRANSFORMS.register_module()
class BodyForward(BaseTransform):
    """Poses the sample's body with the body model of its gender (SMPL-X or the stand-in).

    Required Keys:
        - sample: the :class:`~posedreamer_mm.body.sample.BodySample` (its ``gender`` picks the model)

    Added Keys:
        - vertices: ``(V, 3)`` float32, camera frame, metres
        - joints: ``(J, 3)`` float32, camera frame, metres
        - faces: ``(F, 3)`` int64
        - drop_reason: ``'invalid_sample'`` (a field of the wrong shape, NaN, bad camera) when dropped

    Args:
        body_model: A ``BODY_MODELS`` config or a :class:`GenderedSMPLXBodyModel` (the generator gives its own);
            each gender's model is built on first use, and a missing gender file raises
            :class:`~posedreamer_mm.body.body_model.BodyModelFileError` naming it (the generator then stops).
    """

    def __init__(self, body_model: GenderedSMPLXBodyModel | dict) -> None:
        self.body_models = gendered_body_model(body_model)
        if self.body_models is None:
            raise ValueError('BodyForward needs a body_model (a BODY_MODELS config; the generator gives its own)')

    def transform(self, results: dict) -> dict | None:
        sample: BodySample = results['sample']
        try:
            sample.validate()
        except ValueError:
            return drop(results, 'invalid_sample')
        model = self.body_models.model(sample.gender)
        with torch.no_grad():
            out = model(**BodySample.stack([sample]))
        results['vertices'] = out.vertices[0].cpu().numpy().astype(np.float32)
        results['joints'] = out.joints[0].cpu().numpy().astype(np.float32)
        results['faces'] = np.asarray(model.faces, np.int64)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(default_gender={self.body_models.default_gender!r})'


@TRANSFORMS.register_module()
class BodyCropCamera(BaseTransform):
    """Computes the square body crop's camera once; every control and the generated image use it.

    Required Keys:
        - sample: its source camera
        - vertices
        - joints

    Modified Keys:
        - sample: a copy whose ``focal``, ``princpt``, ``img_size`` are the crop's; ``joints_3d``, ``joints_2d``
          (crop pixels) and ``bbox`` (projected mesh, crop pixels) are set; ``meta['source_camera']`` and
          ``meta['crop_box']`` (xywh in the source image) record where the crop came from

    Added Keys:
        - crop_box: xywh of the crop in the source image
        - drop_reason: ``geometry_<reason>`` from ``render.geometry.check_render_geometry`` (NaN vertices, a body
          touching or behind the camera plane, a degenerate projection...) when dropped

    Args:
        size: Crop side in pixels (the control and generated images' size).
        margin: The crop side is ``max(w, h) * (1 + margin)`` of the body's projected box.
    """

    def __init__(self, size: int = 512, margin: float = 0.1) -> None:
        self.size, self.margin = int(size), float(margin)

    def transform(self, results: dict) -> dict | None:
        sample: BodySample = results['sample']
        try:
            check_render_geometry(results['vertices'], sample.focal, sample.princpt, sample.img_size,
                                  require_in_view=True)
        except GeometryError as err:
            return drop(results, f'geometry_{err.reason}')
        cam = body_crop_camera(results['vertices'], sample.focal, sample.princpt, self.size, self.margin)
        label = sample.copy()
        label.meta['source_camera'] = dict(focal=sample.focal.tolist(), princpt=sample.princpt.tolist(),
                                           img_size=sample.img_size.tolist())
        label.meta['crop_box'] = np.asarray(cam['crop_box'], np.float64).tolist()
        label.focal = np.asarray(cam['focal'], np.float32)
        label.princpt = np.asarray(cam['princpt'], np.float32)
        label.img_size = np.asarray(cam['img_size'], np.int64)
        label.joints_3d = results['joints'].astype(np.float32)
        label.joints_2d = project(results['joints'], label.focal, label.princpt).astype(np.float32)
        label.bbox = np.asarray(cam['bbox'], np.float32)
        results['sample'] = label
        results['crop_box'] = label.meta['crop_box']
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size}, margin={self.margin})'


@TRANSFORMS.register_module()
class RenderControls(BaseTransform):
    """Renders every control image at the sample's (crop) camera.

    Required Keys:
        - sample: with the crop camera (:class:`BodyCropCamera`)
        - vertices
        - faces
        - joints

    Added Keys:
        - controls: ``{control_type: (H, W, 3) uint8 RGB}``
        - depth: ``(H, W)`` metres, 0 background, from the first renderer that returns one, else None
        - clip_planes: ``(near, far)`` metres of that render, else of the first (nearer points are not in its
          image)
        - drop_reason: ``render_<reason>`` when a renderer refuses the geometry

    Args:
        controls: ``RENDERERS`` configs without ``size``/``margin`` (the crop camera is :class:`BodyCropCamera`'s),
            or built renderers; each image is stored under its renderer's ``control_type`` (one renderer each).
        body_model: Given to renderers whose constructor takes ``body_model`` (PNCC colours come from the
            canonical body): a ``BODY_MODELS`` config or a :class:`GenderedSMPLXBodyModel`, whose default-gender
            model they get. The generator gives its own.
    """

    def __init__(self, controls: Sequence[dict | Any],
                 body_model: GenderedSMPLXBodyModel | dict | None = None) -> None:
        body_models = gendered_body_model(body_model)
        self.renderers: dict[str, Any] = {}
        for cfg in controls:
            renderer = build_renderer(cfg, body_models.default if body_models is not None else None)
            if renderer.control_type in self.renderers:
                raise ValueError(f'two controls render {renderer.control_type!r}; each control type once')
            self.renderers[renderer.control_type] = renderer
        if not self.renderers:
            raise ValueError('RenderControls needs at least one control renderer (controls=[dict(type=...)])')

    def transform(self, results: dict) -> dict | None:
        sample: BodySample = results['sample']
        controls, depth, planes = {}, None, None
        for ctype, renderer in self.renderers.items():
            try:
                out = renderer.render(results['vertices'], results['faces'], sample.focal, sample.princpt,
                                      sample.img_size, joints=results['joints'])
            except GeometryError as err:
                return drop(results, f'render_{err.reason}')
            controls[ctype] = out['image']
            if planes is None:
                planes = out.get('clip_planes')
            if depth is None and out.get('depth') is not None:
                depth, planes = out['depth'], out.get('clip_planes', planes)
        results['controls'], results['depth'], results['clip_planes'] = controls, depth, planes
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(controls={list(self.renderers)})'


@TRANSFORMS.register_module()
class COCO17Visibility(BaseTransform):
    """COCO-17 keypoints with visibility of the label (``render.visibility.coco17_keypoints``, the rule the
    skeleton control uses too).

    Required Keys:
        - sample: crop camera, ``joints_2d``, ``joints_3d``

    Optional Keys:
        - depth: without a rendered depth no keypoint is flagged occluded
        - clip_planes: a joint at or nearer than the render's near plane is flagged 0, as the skeleton control
          does; without it, one behind the camera

    Modified Keys:
        - sample: its ``keypoints_coco17`` is set

    Added Keys:
        - keypoints_coco17: ``(17, 3)`` float32: x, y in image pixels, visibility 2/1/0
        - drop_reason: ``'too_few_keypoints'`` when fewer than ``min_visible`` keypoints lie in the image (flag > 0)

    Args:
        min_visible: Keypoints a sample needs inside the image.
    """

    def __init__(self, min_visible: int = 0) -> None:
        self.min_visible = int(min_visible)

    def transform(self, results: dict) -> dict | None:
        sample: BodySample = results['sample']
        planes = results.get('clip_planes')
        kp = coco17_keypoints(sample.joints_2d, sample.joints_3d, sample.img_size, results.get('depth'),
                              min_depth=float(planes[0]) if planes is not None else 0.0)
        if int((kp[:, 2] > 0).sum()) < self.min_visible:
            return drop(results, 'too_few_keypoints')
        sample.keypoints_coco17 = kp
        results['keypoints_coco17'] = kp
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(min_visible={self.min_visible})'


@TRANSFORMS.register_module()
class SamplePrompt(BaseTransform):
    """Draws the sample's caption from its seed (:class:`~posedreamer_mm.generation.prompts.PromptSampler`).

    Required Keys:
        - seed
        - sample: its ``gender``

    Added Keys:
        - prompt
        - negative_prompt
        - prompt_attributes: the drawn attributes and the template's index

    Args:
        prompts: A ``PROMPT_SAMPLERS`` config (default: the ``generic`` preset; checked now: a template field no
            attribute list fills is refused) or a built sampler ``(seed, gender) -> (prompt, negative, attributes)``.
    """

    def __init__(self, prompts: dict | Any | None = None) -> None:
        prompts = dict(type='PromptSampler', preset='generic') if prompts is None else prompts
        self.prompts = PROMPT_SAMPLERS.build(prompts) if isinstance(prompts, dict) else prompts

    def transform(self, results: dict) -> dict:
        prompt, negative, attributes = self.prompts(results['seed'], results['sample'].gender)
        results.update(prompt=prompt, negative_prompt=negative, prompt_attributes=attributes)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.prompts!r})'
