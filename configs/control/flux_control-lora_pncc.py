# FLUX.1-dev control LoRA for the PNCC control in diffusers' Flux Control format (docs/control_training_flux.md):
# x_embedder widened for [image | PNCC] latents, a peft LoRA on it and on every block, flow-matching loss with
# logit-normal sigmas. Weights by local path: pretrained = a diffusers FLUX.1-dev folder (model_index.json +
# transformer/ vae/ text_encoder/ tokenizer/ text_encoder_2/ tokenizer_2/ scheduler/); data_root = a pair dataset
# (docs/control_pairs.md).
# python tools/train.py configs/control/flux_control-lora_pncc.py \
#     --cfg-options pretrained=/weights/FLUX.1-dev data_root=/data/pairs/pncc-1024
# bash tools/dist_train.sh configs/control/flux_control-lora_pncc.py 8 --cfg-options ...
# The export (work_dir/diffusers/iter_N/pytorch_lora_weights.safetensors) is what
# configs/generation/backends/flux_control-lora_pncc.py loads as control_lora.
# Hyper-parameters: diffusers' Flux Control LoRA example (rank 64 = alpha, AdamW lr 1e-4, batch 1 x 4 accumulated,
# bf16, gradient checkpointing, grad-norm clip 1, constant LR) at the reference's 1024 px image size; the guidance
# fed in training is the one the generation config uses (10, as FLUX.1-Depth-dev).
_base_ = ['../_base_/diffusion_runtime.py']  # loop, AMP, hooks, logging, seed

pretrained = 'weights/FLUX.1-dev'
data_root = 'data/pairs/pncc-1024'
control_types = ['pncc']
resolution = 1024
batch_size = 1                 # per GPU (FLUX.1-dev 12B in bf16: ~24 GB of weights before activations)
accumulative_counts = 4        # effective batch = GPUs x batch_size x this
max_iters = 20000
save_interval = 1000

model = dict(
    type='FluxControlLoRATrainer', pretrained=pretrained, rank=64, alpha=64,
    weight_dtype='bfloat16',       # frozen transformer and text encoders; the LoRA trains in float32 under AMP
    gradient_checkpointing=True,   # without it 1024 px activations do not fit an 80 GB GPU
    guidance_scale=10.0, max_sequence_length=512,
    logit_mean=0.0, logit_std=1.0, flow_shift=1.0,  # SD3's logit-normal sigmas, unshifted (diffusers' FLUX examples)
    caption_dropout=0.1, control_dropout=0.0, noise_seed=0)

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(type='ControlPairDataset', data_root=data_root, control_types=control_types,
                 pipeline=[dict(type='LoadControlPair'), dict(type='ResizeControlPair', size=resolution),
                           dict(type='PackControlPair')]))
train_cfg = dict(max_iters=max_iters)

optim_wrapper = dict(accumulative_counts=accumulative_counts, optimizer=dict(lr=1e-4, weight_decay=1e-4))

default_hooks = dict(checkpoint=dict(interval=save_interval))
custom_hooks = [
    dict(type='DiffusersExportHook', interval=save_interval),
    # Held-out OKS and a contact sheet every N iterations (docs/control_validation.md):
    # dict(type='ControlValidationHook', data_root='data/pairs/pncc-1024-val', control_types=control_types,
    #      scorer=dict(type='MediaPipeScorer'), num_samples=16, interval=save_interval),
]
