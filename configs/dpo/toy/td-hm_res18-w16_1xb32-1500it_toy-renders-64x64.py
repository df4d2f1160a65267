# A tiny top-down heatmap pose model for the DPO method at toy scale (docs/dpo_toy_scorer.md): an mmpose ResNet-18
# of width 16 (0.93 M parameters) trained from scratch with mmpose's own loop on the COCO export of stand-in renders
# (benchmarks/toy_pose_scorer.py writes the data, fills `data_root`/`ann_file` and trains). A stand-in for a real
# COCO estimator, for 64-128 px images where the whole image is the person's box: `MMPoseScorer` without a
# detector scores the whole image as one box, so the training boxes are whole images too. The model input is 64x64
# whatever the image size (TopdownAffine warps the box to it).
_base_ = ['../../_base_/default_runtime.py']

data_root = 'data/toy_renders/'                          # a generated dataset (its COCO export's file names are
ann_file = data_root + 'coco_keypoints_whole_image.json'  # relative to it); both overridable by --cfg-options

max_iters = 1500
train_cfg = dict(by_epoch=False, max_iters=max_iters)
optim_wrapper = dict(optimizer=dict(type='Adam', lr=2e-3))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=50, start_factor=0.01, by_epoch=False),
    dict(type='CosineAnnealingLR', begin=0, end=max_iters, T_max=max_iters, eta_min=2e-5, by_epoch=False),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='CheckpointHook', interval=max_iters, by_epoch=False, max_keep_ckpts=1),
)
log_processor = dict(by_epoch=False, window_size=50)
randomness = dict(seed=0)

# The person box is the whole image, warped to a square input; heatmaps at 1/4 of it, decoded with DARK.
codec = dict(type='MSRAHeatmap', input_size=(64, 64), heatmap_size=(16, 16), sigma=1.5, unbiased=True)

model = dict(
    type='TopdownPoseEstimator',
    data_preprocessor=dict(type='PoseDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    backbone=dict(type='ResNet', depth=18, stem_channels=16, base_channels=16, out_indices=(1, 2, 3)),
    # Stages 2-4 resized to stage 2's 8x8 (stride 8) and concatenated (32 + 64 + 128 channels): the last stage alone
    # is 2x2 at this input, too coarse to place joints (measured: 0.698 vs 0.727 mean OKS, 47 % vs 30 % left/right
    # swapped on the held-out renders at the same CPU cost).
    neck=dict(type='FeatureMapProcessor', select_index=(0, 1, 2), concat=True),
    head=dict(type='HeatmapHead', in_channels=224, out_channels=17, deconv_out_channels=(64,),
              deconv_kernel_sizes=(4,), loss=dict(type='KeypointMSELoss', use_target_weight=True),
              decoder=codec),
    test_cfg=dict(flip_test=False),
)

# Robust to what a tiny diffusion model draws: blur of up to ~2.5 px (on the whole image, before the crop, so in the
# scorer's pixels), colour jitter; flips swap left and right through the dataset's flip_indices.
train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.0),
    dict(type='mmpretrain.GaussianBlur', magnitude_range=(0.1, 2.5), magnitude_std='inf', prob=0.6),
    dict(type='RandomFlip', direction='horizontal'),
    dict(type='RandomBBoxTransform', shift_factor=0.08, shift_prob=0.5, scale_factor=(0.9, 1.25), rotate_factor=20.0,
         rotate_prob=0.5),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PhotometricDistortion'),
    dict(type='GenerateTarget', encoder=codec),
    dict(type='PackPoseInputs'),
]
test_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.0),
    dict(type='TopdownAffine', input_size=codec['input_size']),
    dict(type='PackPoseInputs'),
]
dataset_type = 'CocoDataset'
# One loader worker: the augmentation (~70 ms CPU per batch) runs beside the model's step (~80 ms) on a second core.
train_dataloader = dict(
    batch_size=32, num_workers=1, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_mode='topdown', ann_file=ann_file,
                 data_prefix=dict(img=''), pipeline=train_pipeline))
# No validation during training (benchmarks/toy_pose_scorer.py measures the scorer afterwards through
# MMPoseScorer); the test loader carries the crop pipeline MMPoseScorer runs.
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_mode='topdown', ann_file=ann_file,
                 data_prefix=dict(img=''), test_mode=True, pipeline=test_pipeline))
test_cfg = dict()
test_evaluator = dict(type='CocoMetric', ann_file=ann_file)
