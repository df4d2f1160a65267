"""Tiny random-weight OpenMMLab models for scorer tests: an RTMDet person detector and a ViT top-down estimator.

Each is written as a real config file plus a ``.pth`` checkpoint in a temporary directory, so ``MMPoseScorer``
loads them through ``init_detector``/``init_model`` as it would real RTMDet/RTMPose weights. The detector's
person-class bias is raised and its box regression fixed to one stride, so every anchor point yields a box
that passes the score threshold (random weights alone give none); the keypoints are random-weight outputs.
"""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

_BN = dict(type='BN')
_ACT = dict(type='SiLU', inplace=True)

TINY_RTMDET = dict(
    default_scope='mmdet',
    model=dict(
        type='RTMDet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[103.53, 116.28, 123.675],
                               std=[57.375, 57.12, 58.395], bgr_to_rgb=False, batch_augments=None),
        backbone=dict(type='CSPNeXt', arch='P5', expand_ratio=0.5, deepen_factor=0.167, widen_factor=0.125,
                      channel_attention=True, norm_cfg=_BN, act_cfg=_ACT),
        neck=dict(type='CSPNeXtPAFPN', in_channels=[32, 64, 128], out_channels=32, num_csp_blocks=1,
                  expand_ratio=0.5, norm_cfg=_BN, act_cfg=_ACT),
        bbox_head=dict(type='RTMDetSepBNHead', num_classes=80, in_channels=32, stacked_convs=1, feat_channels=32,
                       anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
                       bbox_coder=dict(type='DistancePointBBoxCoder'),
                       loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
                       loss_bbox=dict(type='GIoULoss', loss_weight=2.0), with_objectness=False,
                       exp_on_reg=False, share_conv=True, pred_kernel_size=1, norm_cfg=_BN, act_cfg=_ACT),
        train_cfg=None,
        test_cfg=dict(nms_pre=200, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=20)),
    # lazy_init: init_detector builds the dataset for its metainfo only; no annotation file is read.
    test_dataloader=dict(dataset=dict(type='CocoDataset', ann_file='', lazy_init=True, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(128, 128), keep_ratio=True),
        dict(type='Pad', size=(128, 128), pad_val=dict(img=(114, 114, 114))),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ])),
)

_CODEC = dict(type='MSRAHeatmap', input_size=(48, 64), heatmap_size=(12, 16), sigma=2)
#: The smoke config's tiny ViT heatmap model (configs/smoke/), with the test pipeline every mmpose config has.
TINY_VIT_POSE = dict(
    default_scope='mmpose',
    model=dict(
        type='TopdownPoseEstimator',
        data_preprocessor=dict(type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
        backbone=dict(type='mmpretrain.VisionTransformer',
                      arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
                      img_size=(64, 48), patch_size=16, qkv_bias=True, drop_path_rate=0.0, with_cls_token=False,
                      out_type='featmap', patch_cfg=dict(padding=2)),
        head=dict(type='HeatmapHead', in_channels=32, out_channels=17, deconv_out_channels=(32, 32),
                  deconv_kernel_sizes=(4, 4), loss=dict(type='KeypointMSELoss', use_target_weight=True),
                  decoder=_CODEC),
        test_cfg=dict(flip_test=False)),
    test_dataloader=dict(dataset=dict(pipeline=[
        dict(type='LoadImage'), dict(type='GetBBoxCenterScale'),
        dict(type='TopdownAffine', input_size=_CODEC['input_size']), dict(type='PackPoseInputs')])),
)


def write_tiny_mmpose_models(out_dir: str | Path, seed: int = 0) -> dict[str, str]:
    """Writes ``det.py``/``det.pth`` and ``pose.py``/``pose.pth`` under ``out_dir``.

    Returns:
        ``MMPoseScorer`` keyword arguments: ``det_config``, ``det_checkpoint``, ``pose_config``,
        ``pose_checkpoint``.
    """
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.hub import get_config
    from mmpose.datasets.datasets.utils import parse_pose_metainfo
    from mmpose.registry import MODELS as MMPOSE_MODELS
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = MMDET_MODELS.build(Config(TINY_RTMDET).model)
    head = det.bbox_head
    with torch.no_grad():
        for conv in head.rtm_cls:
            conv.bias.fill_(-4.0)
            conv.bias[0] = 4.0   # class 0, person
        for conv in head.rtm_reg:
            conv.weight.zero_()
            conv.bias.fill_(1.0)
    torch.save(dict(state_dict=det.state_dict(), meta=dict(dataset_meta=dict(classes=('person',)))), out / 'det.pth')
    with DefaultScope.overwrite_default_scope('mmpose'):
        pose = MMPOSE_MODELS.build(Config(TINY_VIT_POSE).model)
    meta = parse_pose_metainfo(get_config('mmpose::_base_/datasets/coco.py').dataset_info)  # any cwd, no fallback
    torch.save(dict(state_dict=pose.state_dict(), meta=dict(dataset_meta=meta)), out / 'pose.pth')
    Config(TINY_RTMDET).dump(str(out / 'det.py'))
    Config(TINY_VIT_POSE).dump(str(out / 'pose.py'))
    return dict(det_config=str(out / 'det.py'), det_checkpoint=str(out / 'det.pth'),
                pose_config=str(out / 'pose.py'), pose_checkpoint=str(out / 'pose.pth'))
