# SDXL ControlNet for the PNCC control (docs/control_training.md). pretrained = a diffusers SDXL folder
# (model_index.json + unet/ vae/ text_encoder/ text_encoder_2/ tokenizer/ tokenizer_2/ scheduler/).
# python tools/train.py configs/control/sdxl_controlnet_pncc.py \
#     --cfg-options pretrained=/weights/stable-diffusion-xl-base-1.0 data_root=/data/pairs/pncc-1024
# The exported ControlNet (work_dir/diffusers/iter_N) is what configs/generation/backends/ SDXL ControlNet configs
# load (SDXLControlNetBackend, controlnets=dict(weights=..., control_type='pncc')).
# Hyper-parameters: diffusers' SDXL ControlNet example (AdamW lr 1e-5, resolution 1024, batch 1 with 4 accumulation
# steps, 15000 steps, grad-norm clip 1) and the ControlNet paper's 50 % empty prompts.
_base_ = ['../_base_/diffusion_runtime.py']  # loop, AMP, hooks, logging, seed

pretrained = 'weights/stable-diffusion-xl-base-1.0'
controlnet = None
data_root = 'data/pairs/pncc-1024'
control_types = ['pncc']
resolution = 1024
batch_size = 1
accumulative_counts = 4
max_iters = 15000 * accumulative_counts  # mmengine counts micro-batches: 15000 optimiser steps
save_interval = 2000

model = dict(
    type='ControlNetTrainer', pretrained=pretrained, controlnet=controlnet,
    conditioning_channels=3 * len(control_types),
    caption_dropout=0.5, control_dropout=0.05,
    dtype='bfloat16',
    vae_dtype='float32',          # SDXL's VAE overflows in float16 (NaN latents); float32 or bfloat16 only
    gradient_checkpointing=True,  # the SDXL ControlNet (1.25 B parameters) at 1024 px does not fit otherwise
    noise_seed=0)

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(type='ControlPairDataset', data_root=data_root, control_types=control_types,
                 pipeline=[dict(type='LoadControlPair'), dict(type='ResizeControlPair', size=resolution),
                           dict(type='PackControlPair')]))
train_cfg = dict(max_iters=max_iters)

optim_wrapper = dict(accumulative_counts=accumulative_counts, optimizer=dict(lr=1e-5, weight_decay=1e-2))

default_hooks = dict(checkpoint=dict(interval=save_interval))
custom_hooks = [
    dict(type='DiffusersExportHook', interval=save_interval),
    # dict(type='EMAHook', momentum=1e-4, update_buffers=True),
    # dict(type='ControlValidationHook', data_root='data/pairs/pncc-1024-val', control_types=control_types,
    #      scorer=dict(type='MediaPipeScorer'), num_samples=16, interval=save_interval),
]
