# Smoke config: a real mmpose top-down heatmap model (tiny mmpretrain ViT + HeatmapHead) trained for 20
# iterations on the tiny COCO-format stand-in written by `python tools/misc/make_tiny_coco.py data/tiny_coco`.
# Exercises the tools (train/test/resume/dist) through registries, mmpose datasets/metrics and the Runner.
_base_ = ['../_base_/default_runtime.py']

data_root = 'data/tiny_coco/'  # overridable: --cfg-options data_root=/path/

train_cfg = dict(by_epoch=False, max_iters=20, val_interval=10)
val_cfg = dict()
test_cfg = dict()

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = [dict(type='LinearLR', begin=0, end=5, start_factor=0.1, by_epoch=False)]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=5, by_epoch=False, max_keep_ckpts=-1),
)
log_processor = dict(by_epoch=False, window_size=1)
randomness = dict(seed=0, deterministic=False)

codec = dict(type='MSRAHeatmap', input_size=(48, 64), heatmap_size=(12, 16), sigma=2)

model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(
        type='mmpretrain.VisionTransformer',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64),
        img_size=(64, 48), patch_size=16, qkv_bias=True, drop_path_rate=0.0, with_cls_token=False,
        out_type='featmap', patch_cfg=dict(padding=2)),
    head=dict(
        type='HeatmapHead', in_channels=32, out_channels=17, deconv_out_channels=(32, 32),
        deconv_kernel_sizes=(4, 4), loss=dict(type='KeypointMSELoss', use_target_weight=True),
        decoder=codec),
    test_cfg=dict(flip_test=False),
)

# Deterministic pipeline (no random augmentation) so a resumed run reproduces an uninterrupted one exactly.
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
val_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale'),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs'),
]
dataset_type = 'CocoDataset'
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_mode='topdown',
                 ann_file='annotations/person_keypoints_train.json', data_prefix=dict(img='images/'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_mode='topdown',
                 ann_file='annotations/person_keypoints_train.json', data_prefix=dict(img='images/'),
                 test_mode=True, pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/person_keypoints_train.json')
test_evaluator = val_evaluator
