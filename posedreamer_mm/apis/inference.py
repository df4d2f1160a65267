"""HMR inference: a model from config + checkpoint (mmpose's ``init_model`` way) and image + person boxes ->
SMPL-X parameters, meshes and full-image cameras."""
from __future__ import annotations

import os
import os.path as osp
from typing import Sequence

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose, pseudo_collate

from posedreamer_mm.registry import MODELS

from .checkpoint import load_checkpoint_strict


def default_camera(img_wh: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The camera assumed when an image's intrinsics are unknown (CLIFF's choice): focal = the image diagonal
    (about 53 degrees horizontal field of view for 4:3), principal point at the image centre (pixel centres
    at integers). Returns ``(focal (2,), princpt (2,))`` pixels."""
    w, h = (float(v) for v in img_wh)
    f = float(np.hypot(w, h))
    return np.array([f, f], np.float32), np.array([(w - 1) / 2, (h - 1) / 2], np.float32)


def init_hmr_model(config: str | os.PathLike | Config, checkpoint: str | os.PathLike | None = None,
                   device: str = 'cpu', cfg_options: dict | None = None) -> torch.nn.Module:
    """Builds the config's HMR model and loads a checkpoint (as mmpose's ``init_model``).

    The backbone's ``init_cfg`` (the ViTPose/MAE initialisation) is dropped: the checkpoint holds the trained
    weights. The body model comes from the config's ``body_model_dir`` (override with ``cfg_options``).

    Args:
        config: Config file or object.
        checkpoint: A ``.pth`` written by the Runner (or a bare state dict) of this config's model (loaded
            strictly by ``apis/checkpoint.py``: a missing file raises ``FileNotFoundError``, missing, unexpected or
            mis-shaped weights ``CheckpointMismatchError``, both naming the file); ``None`` keeps random weights.
        device: Torch device.
        cfg_options: Overrides, e.g. ``{'model.body_model.model_path': '/models/smplx'}``.

    Returns:
        The model in eval mode, with ``model.cfg`` set.
    """
    from posedreamer_mm.apis.launch import load_config
    from posedreamer_mm.utils import register_all_modules
    register_all_modules()
    cfg = config if isinstance(config, Config) else load_config(str(config), cfg_options)
    if isinstance(config, Config) and cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        # Strict: a checkpoint of another architecture (ViT-S weights into a ViT-L config) must not load silently.
        load_checkpoint_strict(model, checkpoint, what='HMR model')
    model.cfg = cfg
    return model.to(device).eval()


def _load_rgb(img: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, str]:
    if isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f'image array must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}')
        return img, ''
    path = str(img)
    bgr = cv2.imread(path, cv2.IMREAD_COLOR) if osp.isfile(path) else None
    if bgr is None:
        raise FileNotFoundError(f'image {path!r} is missing or cannot be decoded (expected a jpg/png file)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), path


def inference_hmr(model: torch.nn.Module, img: str | os.PathLike | np.ndarray, bboxes=None, focal=None,
                  princpt=None, batch_size: int = 16) -> list:
    """Recovers one SMPL-X body per person box.

    The config's test pipeline prepares each person (its first step, image loading, is replaced by the image
    given here, as mmdet's ``inference_detector`` does for arrays), then the model predicts.

    Args:
        model: From :func:`init_hmr_model`.
        img: Image file or ``(H, W, 3)`` uint8 **RGB** array (the project's image convention).
        bboxes: ``(N, 4)`` person boxes, xyxy full-image pixels; ``None``: the whole image is one person.
        focal: ``(2,)`` or scalar focal length in pixels of ``img``; ``None``: :func:`default_camera`.
        princpt: ``(2,)`` principal point; ``None``: the image centre.
        batch_size: People per forward pass.

    Returns:
        One ``PoseDataSample`` per box, in box order, whose ``pred_instances`` hold (numpy float32, camera frame
        of ``img``): ``smplx_global_orient (1, 3)``, ``smplx_body_pose (1, 63)``, hands ``(1, 45)``, jaw, betas,
        expression, ``smplx_transl (1, 3)``, ``vertices (1, V, 3)`` and ``joints_3d`` metres, ``cam_t (1, 3)`` and
        ``keypoints (1, 17, 2)`` in ``img`` pixels; ``metainfo`` has the camera used.
    """
    from posedreamer_mm.datasets.hmr_base import make_data_info
    image, path = _load_rgb(img)
    h, w = image.shape[:2]
    f0, p0 = default_camera((w, h))
    focal = f0 if focal is None else np.broadcast_to(np.asarray(focal, np.float32), (2,))
    princpt = p0 if princpt is None else np.asarray(princpt, np.float32).reshape(2)
    boxes = np.array([[0, 0, w - 1, h - 1]], np.float32) if bboxes is None else np.asarray(bboxes, np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f'bboxes must be (N, 4) xyxy, got shape {boxes.shape}')
    pipeline = Compose(model.cfg.test_dataloader.dataset.pipeline[1:])
    data = []
    for i, box in enumerate(boxes):
        info = make_data_info(img_path=path, sample_id=f'{osp.basename(path) or "image"}#{i}', dataset_name='inference',
                              focal=focal, princpt=princpt, img_wh=(w, h), smplx={}, has_smplx={}, bbox_xyxy=box)
        info.update(img=image.copy(), img_shape=(h, w), ori_shape=(h, w), test_mode=True)
        packed = pipeline(info)
        if packed is None:
            raise ValueError(f'the test pipeline dropped person box {i} {box.tolist()}')
        data.append(packed)
    results = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            results += model.test_step(pseudo_collate(data[start:start + batch_size]))
    return results


__all__ = ['init_hmr_model', 'inference_hmr', 'default_camera']
