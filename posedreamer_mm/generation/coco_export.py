"""COCO-format keypoint annotations of a generated dataset, so mmpose users can train 2D models on it.

``export_coco_keypoints(reader, 'outputs/run/coco_keypoints.json')`` writes one image and one person annotation per
sample (``file_name`` relative to the dataset root; mmpose's ``CocoDataset`` with ``data_prefix=dict(img='')`` and
``data_root`` = the dataset root reads it; ``tools/export_coco.py`` is the command). Per annotation:

- ``keypoints``: the label's COCO-17 points with COCO visibility (2 visible, 1 occluded, 0 outside the image: then
  x = y = 0, as COCO stores unlabelled points); ``num_keypoints`` counts the labelled ones.
- ``bbox``: the projected mesh's box (``BodySample.bbox``) clipped to the image, ``x, y, w, h`` pixels.
- ``segmentation`` and ``area``: the person's silhouette, as COCO defines them (``area`` is the segment's pixel
  count, not the box's ``w * h``: COCO's OKS divides by it, so a box area makes keypoint metrics optimistic). The
  silhouette is exact: the sample's SMPL-X label mesh rendered again at its camera with the project's rasteriser
  (``render/rasterizer.py``, the renderers' clip planes), stored as COCO RLE (``pycocotools.mask.encode``). The
  generated dataset is read only; its files do not change.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from posedreamer_mm.body.joint_maps import COCO17_NAMES, COCO17_SKELETON
from posedreamer_mm.body.sample import BodySample
from posedreamer_mm.utils.fileio import atomic_write_text

from .reader import GeneratedDataReader

#: Samples posed per body-model forward.
_BATCH = 16


def manifest_body_model(reader: GeneratedDataReader) -> dict:
    """The body-model config the dataset was generated with (``manifest.json`` -> ``config.body_model``).

    Raises:
        KeyError: naming the manifest, when it records none (pass ``body_model=`` instead).
    """
    cfg = (reader.manifest.get('config') or {}).get('body_model')
    if not isinstance(cfg, dict):
        raise KeyError(f'{os.path.join(reader.root, "manifest.json")} records no config.body_model: give the body '
                       'model the dataset was generated with (body_model=dict(type="SMPLXBodyModel", model_path=...) '
                       'or tools/export_coco.py --body-model-dir)')
    return dict(cfg)


def clipped_bbox(bbox: Sequence[float], img_size: Sequence[int]) -> list[float]:
    """``bbox`` (x, y, w, h) clipped to a ``(W, H)`` image, as (x, y, w, h)."""
    w, h = (float(v) for v in img_size)
    x, y, bw, bh = (float(v) for v in bbox)
    x0, y0 = min(max(x, 0.0), w), min(max(y, 0.0), h)
    x1, y1 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
    return [x0, y0, x1 - x0, y1 - y0]


def label_masks(samples: Sequence[BodySample], body_models) -> list[np.ndarray]:
    """Each sample's silhouette: its label mesh rendered at its own camera.

    Args:
        samples: The labels (camera-frame SMPL-X parameters and the image's camera).
        body_models: A ``GenderedSMPLXBodyModel`` (each sample posed with the model of its gender).

    Returns:
        One ``(H, W)`` bool mask per sample (pixels whose centre the mesh covers; ``docs/rendering.md``).

    Raises:
        posedreamer_mm.render.geometry.GeometryError: naming the sample whose body cannot be rendered at its camera.
    """
    from posedreamer_mm.render.geometry import GeometryError, check_render_geometry
    from posedreamer_mm.render.rasterizer import default_rasterizer
    masks = []
    for start in range(0, len(samples), _BATCH):
        chunk = list(samples[start:start + _BATCH])
        with torch.no_grad():
            verts = body_models.forward_samples(chunk).vertices.detach().cpu().numpy()
        for sample, v in zip(chunk, verts):
            size = tuple(int(s) for s in sample.img_size)
            try:
                geo = check_render_geometry(v, sample.focal, sample.princpt, size)
            except GeometryError as err:
                raise GeometryError(err.reason, f'sample {sample.id!r}: its label cannot be rendered at its camera: '
                                                f'{err}') from err
            out = default_rasterizer().render(v, body_models.faces, geo.camera.focal, geo.camera.princpt, size,
                                              outputs=('mask',), planes=(geo.near, geo.far))
            masks.append(out['mask'])
    return masks


def mask_rle(mask: np.ndarray) -> dict:
    """COCO RLE of a ``(H, W)`` bool mask (``counts`` as a string, JSON-ready)."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=[int(s) for s in rle['size']], counts=rle['counts'].decode('ascii'))


def coco_keypoints_dict(reader: GeneratedDataReader, body_model: dict | torch.nn.Module | None = None) -> dict:
    """The COCO keypoints dict (``images``, ``annotations``, ``categories``) of every sample of ``reader``.

    Args:
        reader: The generated dataset.
        body_model: The body model of the labels, to render the silhouettes: a ``BODY_MODELS`` config, a built
            ``GenderedSMPLXBodyModel``, or ``None`` for the one the manifest records (:func:`manifest_body_model`).
    """
    from posedreamer_mm.body.gendered import GenderedSMPLXBodyModel
    if body_model is None:
        body_model = manifest_body_model(reader)
    models = body_model if isinstance(body_model, GenderedSMPLXBodyModel) else \
        GenderedSMPLXBodyModel.from_config(dict(body_model))
    images, annotations = [], []
    for start in range(0, len(reader), _BATCH):
        rows = range(start, min(start + _BATCH, len(reader)))
        samples = [reader.sample(i) for i in rows]
        for i, sample, mask in zip(rows, samples, label_masks(samples, models)):
            w, h = (int(v) for v in sample.img_size)
            kp = np.asarray(sample.keypoints_coco17, np.float64).copy()
            kp[kp[:, 2] == 0, :2] = 0.0
            images.append(dict(id=i + 1, file_name=reader.meta(i)['image'], width=w, height=h, sample_id=sample.id))
            annotations.append(dict(id=i + 1, image_id=i + 1, category_id=1, iscrowd=0,
                                    keypoints=[round(float(v), 3) for v in kp.reshape(-1)],
                                    num_keypoints=int((kp[:, 2] > 0).sum()),
                                    bbox=[round(v, 3) for v in clipped_bbox(sample.bbox, (w, h))],
                                    area=float(mask.sum()), segmentation=mask_rle(mask)))
    categories = [dict(id=1, name='person', supercategory='person', keypoints=list(COCO17_NAMES),
                       skeleton=[[a + 1, b + 1] for a, b in COCO17_SKELETON])]
    return dict(info=dict(description=f'posedreamer_mm generated dataset {reader.root}'), images=images,
                annotations=annotations, categories=categories)


def export_coco_keypoints(reader: GeneratedDataReader | str | os.PathLike, out_file: str | os.PathLike,
                          body_model: dict | torch.nn.Module | None = None) -> str:
    """Writes :func:`coco_keypoints_dict` to ``out_file`` (atomically); returns its path."""
    if not isinstance(reader, GeneratedDataReader):
        reader = GeneratedDataReader(reader)
    atomic_write_text(out_file, json.dumps(coco_keypoints_dict(reader, body_model)))
    return os.fspath(out_file)
