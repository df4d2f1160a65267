"""``MMPoseScorer``: an mmdet person detector and an mmpose top-down estimator, both from config + checkpoint.

The OpenMMLab way (as mmpose's ``demo/topdown_demo_with_mmdet.py``): ``mmdet.apis.init_detector`` and
``mmpose.apis.init_model`` build the two models from their config files (or dicts) and load local checkpoints;
the test pipelines come from the configs. Unlike ``inference_detector``/``inference_topdown``, which run one image
(and, for poses, one image's boxes) per forward, the scorer collates several images into one detector batch and
the boxes of several images into pose batches of ``batch_size`` crops.

Typical config (real weights are the user's local files; nothing downloads)::

    scorer = dict(
        type='MMPoseScorer',
        det_config='mmdet::rtmdet/rtmdet_m_8xb32-300e_coco.py', det_checkpoint=det_ckpt,
        pose_config='mmpose::body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py',
        pose_checkpoint=pose_ckpt, device='cuda:0')
"""
from __future__ import annotations

import os
import os.path as osp
import threading
from collections.abc import Sequence

import numpy as np

from posedreamer_mm.apis.checkpoint import check_checkpoint
from posedreamer_mm.registry import SCORERS
from posedreamer_mm.utils.pickling import PicklesWithoutLocalState

from .base import BasePoseScorer, PoseDetections, check_rgb_image


def _load_config(config, cfg_options: dict | None, what: str):
    """A ``mmengine.Config`` from a file path (``mmdet::``/``mmpose::`` package paths allowed) or a dict."""
    from mmengine.config import Config
    if isinstance(config, Config):
        cfg = config.copy()
    elif isinstance(config, dict):
        cfg = Config(config)
    elif isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if '::' in path:  # a config shipped inside an installed package, e.g. 'mmdet::rtmdet/rtmdet_m_...py'
            from mmengine.config.utils import _get_external_cfg_base_path, _get_package_and_cfg_path
            from mmengine.utils import get_installed_path
            package, rel = _get_package_and_cfg_path(path)
            path = _get_external_cfg_base_path(get_installed_path(package), rel)
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} config {path} does not exist (expected an mmdet/mmpose config file)')
        cfg = Config.fromfile(path)
    else:
        raise TypeError(f'{what} config must be a file path, a dict or a Config, got {type(config).__name__}')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if 'model' not in cfg:
        raise KeyError(f'{what} config has no `model` key: is it an mmdet/mmpose model config?')
    return cfg


def _check_checkpoint(path, what: str) -> str:
    path = os.fspath(path) if path is not None else None
    if path is None or '://' in path:
        raise ValueError(f'{what}_checkpoint must be a local checkpoint file (nothing is downloaded), got {path!r}')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} checkpoint {path} does not exist (expected a .pth state dict)')
    return path


def _keypoint_extent(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(n, 4)`` xyxy boxes spanning each person's 17 keypoints, clipped to the image."""
    lo = np.clip(keypoints.min(1), 0, [width, height])
    hi = np.clip(keypoints.max(1), 0, [width, height])
    return np.concatenate([lo, hi], -1).astype(np.float32)


@SCORERS.register_module()
class MMPoseScorer(PicklesWithoutLocalState, BasePoseScorer):
    """Top-down 2D pose scoring: mmdet person boxes, then an mmpose estimator on each box. Multi-person.

    Args:
        pose_config: mmpose top-down config (path, ``mmpose::`` path, dict or Config) whose
            ``test_dataloader.dataset.pipeline`` prepares a crop (as every mmpose config has).
        pose_checkpoint: local checkpoint of the pose model.
        det_config: mmdet detector config; ``None`` estimates one person on the whole image (the crop is the
            image) and reports the extent of its 17 keypoints as the person box: that box's area is the OKS scale
            (``scoring/matching.py`` takes the detection as ground truth), which the image's area would inflate.
        det_checkpoint: local checkpoint of the detector (required with ``det_config``).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:N'``; ``'auto'`` takes CUDA when available.
        det_cat_id: the detector's person class index (0 in COCO-trained detectors).
        det_score_thr: keep boxes scoring ``>= det_score_thr``.
        max_people: keep at most this many boxes per image, best first.
        batch_size: crops per pose forward (and images per detector forward).
        det_cfg_options: overrides merged into the detector config (e.g. ``{'model.test_cfg.score_thr': 0.1}``).
        pose_cfg_options: overrides merged into the pose config.

    Keypoint scores are the estimator's confidences clipped to ``[0, 1]`` (heatmap maxima can exceed 1). With a
    whole-body (133-keypoint) estimator, its first 17 keypoints (COCO's body) are used.
    """

    name = 'mmpose'
    _process_local = dict(_models=None)   # workers rebuild the models on first use

    def __init__(self, pose_config, pose_checkpoint: str, det_config=None, det_checkpoint: str | None = None,
                 device: str = 'auto', det_cat_id: int = 0, det_score_thr: float = 0.3, max_people: int = 20,
                 batch_size: int = 16, det_cfg_options: dict | None = None,
                 pose_cfg_options: dict | None = None) -> None:
        self.pose_cfg = _load_config(pose_config, pose_cfg_options, 'pose')
        if not self.pose_cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline'):
            raise KeyError('pose config has no test_dataloader.dataset.pipeline (the crop pipeline every mmpose '
                           f'config carries): {pose_config if not isinstance(pose_config, dict) else "<dict>"}')
        self.pose_checkpoint = _check_checkpoint(pose_checkpoint, 'pose')
        self.det_cfg = _load_config(det_config, det_cfg_options, 'detector') if det_config is not None else None
        if self.det_cfg is not None and not (self.det_cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline')
                                             or self.det_cfg.get('test_pipeline')):
            raise KeyError('detector config has neither test_dataloader.dataset.pipeline nor test_pipeline: '
                           f'{det_config if not isinstance(det_config, dict) else "<dict>"}')
        self.det_checkpoint = _check_checkpoint(det_checkpoint, 'det') if det_config is not None else None
        if batch_size < 1 or max_people < 1:
            raise ValueError(f'batch_size and max_people must be >= 1, got {batch_size}, {max_people}')
        self.device, self.det_cat_id, self.det_score_thr = device, det_cat_id, det_score_thr
        self.max_people, self.batch_size = max_people, batch_size
        self._models = None
        self._lock = threading.Lock()

    def _resolved_device(self) -> str:
        import torch
        if self.device == 'auto':
            return 'cuda' if torch.cuda.is_available() else 'cpu'
        return self.device

    def setup(self) -> None:
        """Builds both models and their test pipelines (called on first use; safe to call again)."""
        with self._lock:
            if self._models is not None:
                return
            from mmcv.transforms import Compose
            from mmengine.registry import DefaultScope
            device = self._resolved_device()
            det = det_pipeline = None
            if self.det_cfg is not None:
                from mmdet.apis import init_detector
                from mmdet.utils import get_test_pipeline_cfg
                with DefaultScope.overwrite_default_scope('mmdet'):
                    det = self._init(init_detector, self.det_cfg, self.det_checkpoint, device, 'detector')
                    pipeline_cfg = get_test_pipeline_cfg(det.cfg.copy())
                    pipeline_cfg[0].type = 'mmdet.LoadImageFromNDArray'
                    det_pipeline = Compose(pipeline_cfg)
            from mmpose.apis import init_model
            with DefaultScope.overwrite_default_scope('mmpose'):
                pose = self._init(init_model, self.pose_cfg, self.pose_checkpoint, device, 'pose')
                pose_pipeline = Compose(pose.cfg.test_dataloader.dataset.pipeline)
            if pose.dataset_meta.get('num_keypoints', 17) < 17:
                raise ValueError(f'the pose model predicts {pose.dataset_meta["num_keypoints"]} keypoints; '
                                 'COCO-17 scoring needs a COCO (or COCO-WholeBody) estimator')
            self._models = (det, det_pipeline, pose, pose_pipeline)

    @staticmethod
    def _init(init_fn, cfg, checkpoint: str, device: str, what: str):
        """Builds a model with ``init_fn`` (mmdet's/mmpose's), naming the files in every loading error."""
        try:
            model = init_fn(cfg, checkpoint, device=device)
        except Exception as err:  # torch/mmengine raise many kinds for unreadable or foreign files
            raise RuntimeError(f'cannot build the {what} model from its config with checkpoint {checkpoint}: '
                               f'{type(err).__name__}: {err}') from err
        # mmdet's/mmpose's loaders are not strict (a foreign checkpoint only warns and leaves random layers), but
        # they read the checkpoint's dataset_meta: keep them and refuse any name or shape they did not fit.
        check_checkpoint(model, checkpoint, f'{what} model')
        return model

    def _detect(self, bgr_images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Person boxes ``(n, 4)`` xyxy and scores ``(n,)`` per image."""
        import torch
        from mmengine.registry import DefaultScope
        det, det_pipeline = self._models[:2]
        if det is None:
            return [(np.array([[0, 0, im.shape[1], im.shape[0]]], np.float32), np.ones(1, np.float32))
                    for im in bgr_images]
        out = []
        with DefaultScope.overwrite_default_scope('mmdet'):
            for start in range(0, len(bgr_images), self.batch_size):
                data = [det_pipeline(dict(img=im, img_id=start + i))
                        for i, im in enumerate(bgr_images[start:start + self.batch_size])]
                batch = dict(inputs=[d['inputs'] for d in data], data_samples=[d['data_samples'] for d in data])
                with torch.no_grad():
                    preds = det.test_step(batch)
                for pred in preds:
                    inst = pred.pred_instances
                    keep = (inst.labels == self.det_cat_id) & (inst.scores >= self.det_score_thr)
                    boxes, scores = inst.bboxes[keep].cpu().numpy(), inst.scores[keep].cpu().numpy()
                    order = np.argsort(-scores, kind='stable')[:self.max_people]
                    out.append((boxes[order].astype(np.float32), scores[order].astype(np.float32)))
        return out

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[PoseDetections]:
        """Detects people and their COCO-17 keypoints in each RGB image (see :class:`BasePoseScorer`)."""
        import torch
        from mmengine.dataset import pseudo_collate
        from mmengine.registry import DefaultScope
        self.setup()
        images = [check_rgb_image(im, 'MMPoseScorer') for im in images]
        # OpenMMLab pipelines expect BGR (as cv2 reads); their data preprocessors convert to RGB.
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images]
        with self._lock:
            boxes = self._detect(bgr)
            pose, pose_pipeline = self._models[2:]
            crops = [(i, b) for i, (bb, _) in enumerate(boxes) for b in bb]
            kpts = np.zeros((len(crops), 17, 2), np.float32)
            kscores = np.zeros((len(crops), 17), np.float32)
            with DefaultScope.overwrite_default_scope('mmpose'):
                for start in range(0, len(crops), self.batch_size):
                    data = []
                    for i, box in crops[start:start + self.batch_size]:
                        info = dict(img=bgr[i], bbox=box[None].astype(np.float32),
                                    bbox_score=np.ones(1, np.float32))
                        info.update(pose.dataset_meta)
                        data.append(pose_pipeline(info))
                    with torch.no_grad():
                        preds = pose.test_step(pseudo_collate(data))
                    for j, pred in enumerate(preds):
                        kpts[start + j] = pred.pred_instances.keypoints[0, :17]
                        kscores[start + j] = pred.pred_instances.keypoint_scores[0, :17]
        out, k = [], 0
        for im, (bb, bs) in zip(images, boxes):
            n = len(bb)
            if self.det_cfg is None:
                bb = _keypoint_extent(kpts[k:k + n], im.shape[1], im.shape[0])
            out.append(PoseDetections(kpts[k:k + n], np.clip(kscores[k:k + n], 0, 1), bb, bs,
                                      (im.shape[1], im.shape[0]), self.name))
            k += n
        return out

    def __repr__(self) -> str:
        det = 'whole image' if self.det_cfg is None else self.det_cfg.model.get('type', '?')
        return (f'{type(self).__name__}(detector={det}, pose={self.pose_cfg.model.get("type", "?")}, '
                f'device={self.device!r}, det_score_thr={self.det_score_thr})')
