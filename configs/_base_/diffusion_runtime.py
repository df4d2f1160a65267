# Runtime shared by the diffusion-training recipes: configs/control/*.py (ControlNet, FLUX control LoRA,
# EasyControl) and configs/dpo/*.py (DPO LoRA); the tiny_* test configs write theirs inline.
# Iteration-based loop on an infinite shuffled sampler, bf16 autocast through mmengine's AmpOptimWrapper (AdamW,
# gradient-norm clip 1), a constant LR, a log line every 50 iterations and a checkpoint (3 kept) every
# save interval. A recipe adds what is its own, as dicts merged into these (docs/control_training.md):
#   train_dataloader = dict(batch_size=..., dataset=...)      train_cfg = dict(max_iters=...)
#   optim_wrapper = dict(accumulative_counts=..., optimizer=dict(lr=..., weight_decay=...))
#   default_hooks = dict(checkpoint=dict(interval=save_interval))   custom_hooks = [DiffusersExportHook, ...]
_base_ = ['./default_runtime.py']

train_dataloader = dict(
    num_workers=4, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'))
train_cfg = dict(by_epoch=False)

optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='bfloat16',
    optimizer=dict(type='AdamW', betas=(0.9, 0.999), eps=1e-8),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, max_keep_ckpts=3),
)
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)  # a fixed seed: a resumed run sees the same data order and noise
