# Tiny FLUX control LoRA training for tests: the tiny random FLUX folder of posedreamer_mm/testing/diffusion.py
# (write_tiny_flux) and a tiny generated dataset with PNCC controls, on CPU.
# python tools/train.py configs/control/tiny_flux_control-lora.py \
#     --cfg-options pretrained=/tmp/tiny/flux data_root=/tmp/pairs
_base_ = ['../_base_/default_runtime.py']

pretrained = 'data/tiny/flux'
data_root = 'data/tiny/pairs'
control_types = ['pncc']
resolution = 32                # the tiny VAE shrinks 2x: 16 x 16 latents, 8 x 8 FLUX tokens

model = dict(type='FluxControlLoRATrainer', pretrained=pretrained, rank=4, alpha=8, max_sequence_length=16,
             caption_dropout=0.2, noise_seed=0)

train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ControlPairDataset', data_root=data_root, control_types=control_types,
                 pipeline=[dict(type='LoadControlPair'), dict(type='ResizeControlPair', size=resolution),
                           dict(type='PackControlPair')]))
train_cfg = dict(by_epoch=False, max_iters=4)

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2, weight_decay=1e-4),
                     clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=-1),
)
custom_hooks = [dict(type='DiffusersExportHook', interval=2)]
log_processor = dict(by_epoch=False, window_size=1)
randomness = dict(seed=0, deterministic=False)
