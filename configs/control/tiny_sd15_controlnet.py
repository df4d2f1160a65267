# Tiny SD1.5 ControlNet training for tests and the learning check: the tiny random SD1.5 folder of
# posedreamer_mm/testing/diffusion.py (write_tiny_sd15) and a tiny generated dataset with PNCC controls, on CPU.
# python tools/train.py configs/control/tiny_sd15_controlnet.py \
#     --cfg-options pretrained=/tmp/tiny/sd15 data_root=/tmp/pairs
# Recipes and what each setting means: docs/control_training.md.
_base_ = ['../_base_/default_runtime.py']

pretrained = 'data/tiny/sd15'      # a diffusers SD1.5 (or SDXL: tiny_sdxl_controlnet.py) folder
controlnet = None                  # None: from the UNet; or a ControlNetModel folder to continue from
data_root = 'data/tiny/pairs'      # a generated dataset (tools/generate.py output) with the controls stored
control_types = ['pncc']
resolution = 32

model = dict(
    type='ControlNetTrainer', pretrained=pretrained, controlnet=controlnet,
    conditioning_channels=3 * len(control_types),
    conditioning_embedding_out_channels=(16, 32),  # the tiny VAE shrinks 2x (SD's 8x: the default 4 widths)
    caption_dropout=0.2, control_dropout=0.1, noise_seed=0, dtype='float32')

train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ControlPairDataset', data_root=data_root, control_types=control_types,
                 pipeline=[dict(type='LoadControlPair'), dict(type='ResizeControlPair', size=resolution),
                           dict(type='PackControlPair')]))
train_cfg = dict(by_epoch=False, max_iters=8)

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-2),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False, max_keep_ckpts=-1),
)
custom_hooks = [dict(type='DiffusersExportHook', interval=4)]
log_processor = dict(by_epoch=False, window_size=1)
# A fixed seed: the sampler's order (and with noise_seed the noise) is the same in a resumed run.
randomness = dict(seed=0, deterministic=False)
