# The reference's PNCC control model: an EasyControl condition LoRA on FLUX.1-dev (docs/control_training_flux.md):
# a LoRA on the condition tokens only, the PNCC condition at a fixed 512 px while images are 1024 px.
# Weights by local path: pretrained = a diffusers FLUX.1-dev folder; data_root = a pair dataset
# (docs/control_pairs.md; the reference used about 130K pairs from DensePose-COCO and AGORA).
# python tools/train.py configs/control/flux_easycontrol_pncc.py \
#     --cfg-options pretrained=/weights/FLUX.1-dev data_root=/data/pairs/pncc-1024
# bash tools/dist_train.sh configs/control/flux_easycontrol_pncc.py 8 --cfg-options ...
# The export (work_dir/diffusers/iter_N/lora.safetensors) is what configs/generation/backends/
# flux_easycontrol_pncc.py loads as condition_lora.
# Hyper-parameters: the reference's (condition LoRA rank 128 = alpha, lr 1e-4, condition 512 / image 1024, bf16,
# batch 1 per GPU, guidance 1 in training as EasyControl's script) plus gradient checkpointing; logit-normal sigmas
# where EasyControl sampled them uniformly (the flow-matching recipe).
_base_ = ['../_base_/diffusion_runtime.py']  # loop, AMP, hooks, logging, seed

pretrained = 'weights/FLUX.1-dev'
data_root = 'data/pairs/pncc-1024'
control_types = ['pncc']
resolution = 1024              # the image; the condition is resized to cond_size inside the model
cond_size = 512
batch_size = 1
accumulative_counts = 1
max_iters = 30000
save_interval = 1000

model = dict(
    type='EasyControlTrainer', pretrained=pretrained, rank=128, alpha=128, cond_size=cond_size,
    weight_dtype='bfloat16', gradient_checkpointing=True, guidance_scale=1.0, max_sequence_length=512,
    logit_mean=0.0, logit_std=1.0, flow_shift=1.0, caption_dropout=0.0, control_dropout=0.0, noise_seed=0)

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(type='ControlPairDataset', data_root=data_root, control_types=control_types,
                 pipeline=[dict(type='LoadControlPair'), dict(type='ResizeControlPair', size=resolution),
                           dict(type='PackControlPair')]))
train_cfg = dict(max_iters=max_iters)

optim_wrapper = dict(accumulative_counts=accumulative_counts, optimizer=dict(lr=1e-4, weight_decay=1e-2))

default_hooks = dict(checkpoint=dict(interval=save_interval))
custom_hooks = [
    dict(type='DiffusersExportHook', interval=save_interval),
    # dict(type='ControlValidationHook', data_root='data/pairs/pncc-1024-val', control_types=control_types,
    #      scorer=dict(type='MediaPipeScorer'), num_samples=16, interval=save_interval),
]
