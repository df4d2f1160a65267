# HMR with a ViT-L backbone (ViTPose-L initialisation) and an SMPL-X transformer-decoder head, trained on
# PoseDreamer data mixed 1:1 with BEDLAM, evaluated on UBody (NeuralAnnot pseudo-GT, SMPLer-X protocol).
#   python tools/train.py configs/hmr_vitl_posedreamer_bedlam.py
#   bash tools/dist_train.sh configs/hmr_vitl_posedreamer_bedlam.py 8
# Model, losses and how to add generated data: docs/hmr.md. Every path below is a top-level variable:
#   --cfg-options body_model_dir=/models/smplx/ bedlam_label_root=/data/bedlam/labels/
# mmpose's COCO keypoint definition (top-level `dataset_info`, the combined dataset's metainfo below), read from
# the installed mmpose package: it resolves from any working directory.
_base_ = ['../_base_/default_runtime.py', 'mmpose::_base_/datasets/coco.py']

# ---- assets (--cfg-options body_model_dir=... acts as if written here: docs/configs.md) -------------------
body_model_dir = 'data/body_models/smplx/'  # holds SMPLX_NEUTRAL.npz (licensed: https://smpl-x.is.tue.mpg.de)
# mmpose ViTPose-L COCO checkpoint (keys 'backbone.*'); for an MAE checkpoint (mmpose's
# pretrained_models/mae_pretrain_vit_large_20230913.pth) set backbone_checkpoint_prefix=None.
backbone_checkpoint = 'checkpoints/td-hm_ViTPose-large_8xb64-210e_coco-256x192.pth'
backbone_checkpoint_prefix = 'backbone.'
posedreamer_root = 'data/posedreamer/'  # PoseDreamer per-image labels (.npz) with their images
bedlam_label_root = 'data/bedlam/bedlam_labels/all_npz_12_training/'
bedlam_img_root = 'data/bedlam/training_images/'
ubody_ann_file = 'data/ubody/annotations/test_keypoints.json'
ubody_smplx_file = 'data/ubody/annotations/test_smplx.json'
ubody_img_root = 'data/ubody/images/'

# ---- schedule ------------------------------------------------------------------------------------------------
train_cfg = dict(by_epoch=False, max_iters=100000, val_interval=5000)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='LayerDecayOptimWrapperConstructor',  # mmpose's, as its ViTPose configs
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.8,
                       custom_keys={'bias': dict(decay_mult=0.0), 'pos_embed': dict(decay_mult=0.0),
                                    'norm': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=1000, start_factor=0.001, by_epoch=False),
    dict(type='CosineAnnealingLR', begin=1000, end=100000, eta_min=1e-6, by_epoch=False),
]
auto_scale_lr = dict(base_batch_size=512)  # 8 GPUs x 64
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=5000, by_epoch=False, max_keep_ckpts=3,
                    save_best='hmr/ubody/pa_pve_mm', rule='less'),
)
log_processor = dict(by_epoch=False)

# ---- model ---------------------------------------------------------------------------------------------------
input_size = (192, 256)  # (W, H) of the crop, ViTPose's
body_model = dict(type='SMPLXBodyModel', model_path=body_model_dir)
model = dict(
    type='HMREstimator',
    data_preprocessor=dict(type='HMRDataPreprocessor'),
    backbone=dict(
        type='mmpretrain.VisionTransformer', arch='large', img_size=(256, 192), patch_size=16, qkv_bias=True,
        drop_path_rate=0.5, with_cls_token=False, out_type='featmap', patch_cfg=dict(padding=2),
        init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint, prefix=backbone_checkpoint_prefix)),
    head=dict(
        type='SMPLXTransformerHead', in_channels=1024, embed_dims=1024, num_layers=6, num_heads=8,
        feedforward_channels=1024, dropout=0.0, num_betas=10, with_hands=False, with_face=False, num_iters=1,
        # Learned positions of the 16x12 patch grid added to the head's memory (docs/hmr.md, "Head").
        pos_embed_size=(16, 12)),
    body_model=body_model,
    # Weights: HMR 2.0's, converted to these losses' per-joint means (its losses sum over joints and entries).
    losses=dict(
        keypoints_2d=dict(type='HMRKeypoint2DLoss', loss_weight=1.0),
        joints_3d=dict(type='HMRJoint3DLoss', loss_weight=5.0),
        smplx_params=dict(type='SMPLXParamLoss', loss_weight=1.0,
                          part_weights=dict(global_orient=0.05, body_pose=0.05, hands=0.05, face=0.05, betas=0.01,
                                            transl=0.0)),
        betas_prior=dict(type='BetasPriorLoss', loss_weight=1e-3)),
)

# ---- data ----------------------------------------------------------------------------------------------------
# The flip and the rotation pivot the SMPL-X translation about the exact rest pelvis J0(betas) of body_model
# (without it, the neutral pelvis: ~3 mm off for the flip, ~1 cm at 30 degrees for the roll). The val pipeline
# neither flips nor rotates, so its crop does not need the body model.
train_pipeline = [
    dict(type='LoadHMRImage'),
    dict(type='HMRRandomFlip', prob=0.5, body_model=body_model),
    dict(type='HMRBBoxCenterScale', padding=1.25),
    dict(type='HMRRandomBBoxTransform', shift_factor=0.1, scale_factor=(0.8, 1.2), rotate_factor=30.0),
    dict(type='HMRTopdownAffine', input_size=input_size, body_model=body_model),
    dict(type='HMRColorJitter'),
    dict(type='PackHMRInputs'),
]
val_pipeline = [
    dict(type='LoadHMRImage'),
    dict(type='HMRBBoxCenterScale', padding=1.25),
    dict(type='HMRTopdownAffine', input_size=input_size),
    dict(type='PackHMRInputs'),
]
# One dict per source, each converting to the shared SMPL-X convention (docs/conventions.md, "HMR data");
# the combined dataset applies the pipeline and mixes by sample_ratio_factor (mmpose's CombinedDataset).
posedreamer_train = dict(type='PoseDreamerHMRDataset', dataset_name='posedreamer', label_root=posedreamer_root)
bedlam_train = dict(type='BEDLAMHMRDataset', dataset_name='bedlam', label_root=bedlam_label_root,
                    img_root=bedlam_img_root)
ubody_val = dict(type='NeuralAnnotHMRDataset', dataset_name='ubody', ann_file=ubody_ann_file,
                 smplx_file=ubody_smplx_file, img_root=ubody_img_root, smplx_model_path=body_model_dir,
                 test_mode=True, pipeline=val_pipeline)
train_dataloader = dict(
    batch_size=64, num_workers=8, persistent_workers=True, pin_memory=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='CombinedDataset', metainfo={{_base_.dataset_info}},
                 datasets=[posedreamer_train, bedlam_train], sample_ratio_factor=[1.0, 1.0],
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    dataset=ubody_val)
test_dataloader = val_dataloader
val_evaluator = dict(type='HMRMetric', body_model=body_model)
test_evaluator = val_evaluator
