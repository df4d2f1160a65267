# The HMR step of the main job's embedded default (bash tools/demo.sh): the ViT HMR model of
# configs/hmr/hmr_vitl_posedreamer_bedlam.py (same head, losses, data pipeline and metric) at the smallest real
# size, trained from scratch on the samples tools/filter.py kept and evaluated on a held-out generated set:
#   python tools/train.py configs/demo/hmr_vit-tiny_1xb16-150it_demo-128x96.py --work-dir outputs/demo/hmr \
#       --cfg-options train_root=outputs/demo/dataset test_root=outputs/demo/heldout
# STAND-INS: a 4-layer, 64-wide ViT with random initial weights (not ViTPose-L), 150 CPU iterations, 128x96 crops,
# the open SMPL-X stand-in body (body_model_dir = None, docs/bodies.md) and rendering-baseline images; its errors
# show the chain works, not what HMR reaches (docs/hmr.md has the learning check).
_base_ = ['../hmr/hmr_vitl_posedreamer_bedlam.py']

# ---- assets (--cfg-options name=value) --------------------------------------------------------------------
body_model_dir = None                 # the open SMPL-X stand-in; a directory with SMPLX_NEUTRAL.npz for SMPL-X
train_root = 'outputs/demo/dataset'   # tools/generate.py output, filtered by tools/filter.py into <root>/filter
test_root = 'outputs/demo/heldout'    # another generated set (another seed), filtered the same way
filtered_manifest = 'filter/manifest_filtered.jsonl'

# ---- schedule ------------------------------------------------------------------------------------------------
max_iters = 150                       # at least 2
warmup_iters = max(1, max_iters // 5)
train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=1e-3, weight_decay=0.01), paramwise_cfg=dict(num_layers=4))
param_scheduler = [
    dict(type='LinearLR', begin=0, end=warmup_iters, start_factor=0.01, by_epoch=False),
    dict(type='CosineAnnealingLR', begin=warmup_iters, end=max_iters, eta_min=1e-5, by_epoch=False),
]
auto_scale_lr = dict(base_batch_size=16)
randomness = dict(seed=0)  # the same weights and errors on every run, as the generated sets are the same bytes
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None))

# ---- model: the base's, with a small randomly initialised ViT ------------------------------------------------
input_size = (96, 128)  # (W, H)
body_model = dict(type='SMPLXBodyModel', model_path=body_model_dir)
model = dict(
    # _delete_: the base's ViT-L entry names a string arch and a ViTPose checkpoint; this one is built from scratch.
    backbone=dict(
        _delete_=True, type='mmpretrain.VisionTransformer',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128),
        img_size=(128, 96), patch_size=16, qkv_bias=True, drop_path_rate=0.0, with_cls_token=False,
        out_type='featmap', patch_cfg=dict(padding=2)),
    head=dict(in_channels=64, embed_dims=64, num_layers=1, num_heads=2, feedforward_channels=128,
              pos_embed_size=(8, 6)),
    body_model=body_model)

# ---- data: the kept samples of one generated set for training, of another for evaluation ---------------------
generated_train = dict(type='GeneratedHMRDataset', dataset_name='demo', data_root=train_root,
                       filtered_manifest=filtered_manifest)
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
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False, pin_memory=False,
    dataset=dict(datasets=[generated_train], sample_ratio_factor=[1.0], pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    # _delete_: the base evaluates on UBody (NeuralAnnot keys); this is a generated held-out set.
    dataset=dict(_delete_=True, type='GeneratedHMRDataset', dataset_name='heldout', data_root=test_root,
                 filtered_manifest=filtered_manifest, test_mode=True, pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='HMRMetric', body_model=body_model)
test_evaluator = val_evaluator
