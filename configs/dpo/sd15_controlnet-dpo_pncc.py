# Diffusion-DPO LoRA for an SD1.5 PNCC ControlNet (docs/dpo.md): the UNet learns, from OKS-ranked pairs, to follow
# the control better. Weights by local path: pretrained = a diffusers SD1.5 folder; controlnet = the ControlNet
# trained by configs/control/sd15_controlnet_pncc.py (work_dir/diffusers/iter_N); candidates_root + pairs_file =
# tools/make_dpo_pairs.py's output (docs/dpo_pairs.md); val_root = a labelled held-out dataset for the hook.
# python tools/train.py configs/dpo/sd15_controlnet-dpo_pncc.py \
#     --cfg-options pretrained=/weights/stable-diffusion-v1-5 controlnet=/work/cn/diffusers/iter_50000 \
#     candidates_root=/data/candidates val_root=/data/val
# bash tools/dist_train.sh configs/dpo/sd15_controlnet-dpo_pncc.py 8 --cfg-options ...
# The LoRA (work_dir/dpo_lora/iter_N, also work_dir/diffusers/iter_N) loads in the SD1.5 ControlNet backend as
# loras=[dict(path=...)].
# Hyper-parameters: beta 5000 (Diffusion-DPO, Wallace et al. 2023); lr 5e-5 and an effective batch of 16 pairs
# (the reference); rank 64 on the UNet's attention projections (not a published setting).
_base_ = ['../_base_/diffusion_runtime.py']  # loop, AMP, hooks, logging, seed

pretrained = 'weights/stable-diffusion-v1-5'
controlnet = 'work_dirs/sd15_controlnet_pncc/diffusers/iter_50000'
candidates_root = 'data/candidates/sd15-pncc-512'
pairs_file = 'dpo_pairs.jsonl'       # relative to candidates_root
val_root = 'data/val/pncc-512'       # labelled held-out dataset with stored controls (DPOControlHook)
control_types = ['pncc']
resolution = 512
batch_size = 4                       # pairs per GPU
accumulative_counts = 4              # effective batch = GPUs x batch_size x this
max_iters = 2000 * accumulative_counts  # mmengine counts micro-batches: 2000 optimiser steps
save_interval = 500 * accumulative_counts
# On-line pair refresh (docs/dpo.md, "On-line pair refresh"): None = train on pairs_file only; a number remakes the
# pairs from the current LoRA's candidates of the same controls every that many iterations, e.g.
# --cfg-options refresh_interval=4000 (every 1000 optimiser steps).
refresh_interval = None
refresh = None if refresh_interval is None else dict(
    interval=refresh_interval, controls=candidates_root, candidates=4, min_gap=0.05, min_winner=0.5)

model = dict(
    type='DiffusionDPO',
    policy=dict(type='ControlNetTrainer', pretrained=pretrained, controlnet=controlnet,
                conditioning_channels=3 * len(control_types),
                caption_dropout=0.0, control_dropout=0.0,   # DPO compares the model on the pair's own condition
                dtype='bfloat16', vae_dtype='float32', gradient_checkpointing=False, noise_seed=0),
    loss=dict(beta=5000.0, loss_type='sigmoid'),
    lora=dict(r=64, lora_alpha=64, target_modules=['to_q', 'to_k', 'to_v', 'to_out.0'], on='denoiser'))

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(type='DPOPairDataset', data_root=candidates_root, ann_file=pairs_file, control_types=control_types,
                 pipeline=[dict(type='LoadDPOPair'), dict(type='ResizeDPOPair', size=resolution),
                           dict(type='PackDPOPair')]))
train_cfg = dict(max_iters=max_iters)

optim_wrapper = dict(accumulative_counts=accumulative_counts, optimizer=dict(lr=5e-5, weight_decay=1e-2))
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100 * accumulative_counts),
                   dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=100 * accumulative_counts)]

default_hooks = dict(checkpoint=dict(interval=save_interval))
custom_hooks = [
    dict(type='DiffusersExportHook', interval=save_interval),
    # base vs current held-out OKS, implicit accuracy, contact sheet; the LoRA at every checkpoint
    dict(type='DPOControlHook', data_root=val_root, control_types=control_types,
         scorer=dict(type='MediaPipeScorer'), num_samples=64, interval=save_interval, size=resolution,
         backend=dict(num_inference_steps=25, guidance_scale=7.5), batch_size=8, refresh=refresh),
]
