# Tiny SD1.5 ControlNet DPO for tests: the tiny random SD1.5 folder of posedreamer_mm/testing/diffusion.py
# (write_tiny_sd15), a tiny trained-like ControlNet (write_tiny_controlnet) and a tiny pairs file, on CPU.
# python tools/train.py configs/dpo/tiny_sd15_controlnet-dpo.py \
#     --cfg-options pretrained=/tmp/tiny/sd15 controlnet=/tmp/tiny/cn candidates_root=/tmp/cands
_base_ = ['../_base_/default_runtime.py']

pretrained = 'data/tiny/sd15'
controlnet = None                  # None: from the UNet (zero outputs; the UNet LoRA still learns)
candidates_root = 'data/tiny/candidates'
pairs_file = 'dpo_pairs.jsonl'
control_types = ['pncc']
resolution = 32

model = dict(
    type='DiffusionDPO',
    policy=dict(type='ControlNetTrainer', pretrained=pretrained, controlnet=controlnet,
                conditioning_channels=3 * len(control_types),
                conditioning_embedding_out_channels=(16, 32),  # the tiny VAE shrinks 2x
                caption_dropout=0.0, control_dropout=0.0, noise_seed=0, dtype='float32'),
    loss=dict(beta=5000.0, loss_type='sigmoid'),
    lora=dict(r=4, lora_alpha=8, target_modules=['to_q', 'to_k', 'to_v', 'to_out.0'], on='denoiser'))

train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='DPOPairDataset', data_root=candidates_root, ann_file=pairs_file, control_types=control_types,
                 pipeline=[dict(type='LoadDPOPair'), dict(type='ResizeDPOPair', size=resolution),
                           dict(type='PackDPOPair')]))
train_cfg = dict(by_epoch=False, max_iters=4)

optim_wrapper = dict(type='OptimWrapper', accumulative_counts=1,
                     optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.0), clip_grad=dict(max_norm=1.0))
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False, max_keep_ckpts=-1),
)
custom_hooks = [dict(type='DiffusersExportHook', interval=2)]
log_processor = dict(by_epoch=False, window_size=1)
randomness = dict(seed=0, deterministic=False)
