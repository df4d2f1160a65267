# Diffusion-DPO LoRA for an SDXL PNCC ControlNet (docs/dpo.md). Paths as in sd15_controlnet-dpo_pncc.py; the
# ControlNet is configs/control/sdxl_controlnet_pncc.py's export.
# python tools/train.py configs/dpo/sdxl_controlnet-dpo_pncc.py \
#     --cfg-options pretrained=/weights/stable-diffusion-xl-base-1.0 controlnet=/work/cnxl/diffusers/iter_60000 \
#     candidates_root=/data/candidates-xl val_root=/data/val-1024
# Hyper-parameters: beta 5000 (Diffusion-DPO's SDXL value), lr 5e-5, effective batch 16 pairs (1 x 16
# accumulation per GPU), rank 64, gradient checkpointing (SDXL UNet + ControlNet at 1024 px).
_base_ = ['../_base_/diffusion_runtime.py']  # loop, AMP, hooks, logging, seed

pretrained = 'weights/stable-diffusion-xl-base-1.0'
controlnet = 'work_dirs/sdxl_controlnet_pncc/diffusers/iter_60000'
candidates_root = 'data/candidates/sdxl-pncc-1024'
pairs_file = 'dpo_pairs.jsonl'
val_root = 'data/val/pncc-1024'
control_types = ['pncc']
resolution = 1024
batch_size = 1
accumulative_counts = 16
max_iters = 2000 * accumulative_counts  # 2000 optimiser steps
save_interval = 250 * accumulative_counts
# On-line pair refresh (docs/dpo.md, "On-line pair refresh"): None = train on pairs_file only; a number remakes the
# pairs from the current LoRA's candidates of the same controls every that many iterations, e.g.
# --cfg-options refresh_interval=8000 (every 500 optimiser steps).
refresh_interval = None
refresh = None if refresh_interval is None else dict(
    interval=refresh_interval, controls=candidates_root, candidates=4, min_gap=0.05, min_winner=0.5)

model = dict(
    type='DiffusionDPO',
    policy=dict(type='ControlNetTrainer', pretrained=pretrained, controlnet=controlnet,
                conditioning_channels=3 * len(control_types), caption_dropout=0.0, control_dropout=0.0,
                dtype='bfloat16',
                vae_dtype='float32',          # SDXL's VAE overflows in float16
                gradient_checkpointing=True, noise_seed=0),
    loss=dict(beta=5000.0, loss_type='sigmoid'),
    lora=dict(r=64, lora_alpha=64, target_modules=['to_q', 'to_k', 'to_v', 'to_out.0'], on='denoiser'))

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(type='DPOPairDataset', data_root=candidates_root, ann_file=pairs_file, control_types=control_types,
                 pipeline=[dict(type='LoadDPOPair'), dict(type='ResizeDPOPair', size=resolution),
                           dict(type='PackDPOPair')]))
train_cfg = dict(max_iters=max_iters)

optim_wrapper = dict(accumulative_counts=accumulative_counts, optimizer=dict(lr=5e-5, weight_decay=1e-2))

default_hooks = dict(checkpoint=dict(interval=save_interval))
custom_hooks = [
    dict(type='DiffusersExportHook', interval=save_interval),
    dict(type='DPOControlHook', data_root=val_root, control_types=control_types,
         scorer=dict(type='MediaPipeScorer'), num_samples=64, interval=save_interval, size=resolution,
         backend=dict(num_inference_steps=25, guidance_scale=5.0), batch_size=4, refresh=refresh),
]
