# SD1.5 ControlNet for the PNCC control, trained on (PNCC, image, caption) pairs (docs/control_training.md).
# Weights by local path: pretrained = a diffusers SD1.5 folder (model_index.json + unet/ vae/ text_encoder/
# tokenizer/ scheduler/); data_root = a pair dataset (docs/control_pairs.md: photo pairs or generated output).
# python tools/train.py configs/control/sd15_controlnet_pncc.py \
#     --cfg-options pretrained=/weights/stable-diffusion-v1-5 data_root=/data/pairs/pncc-512
# bash tools/dist_train.sh configs/control/sd15_controlnet_pncc.py 8 --cfg-options ...
# The exported ControlNet (work_dir/diffusers/iter_N) is what configs/generation/backends/sd15_controlnet_pncc.py
# loads as controlnet_dir.
# Hyper-parameters: diffusers' SD1.5 ControlNet example (AdamW lr 1e-5, batch 4, resolution 512, grad-norm clip 1,
# constant LR) and the ControlNet paper's 50 % empty prompts; the reference trained only a FLUX control, so
# nothing here is the reference's own SD1.5 setting.
_base_ = ['../_base_/diffusion_runtime.py']  # loop, AMP, hooks, logging, seed

pretrained = 'weights/stable-diffusion-v1-5'
controlnet = None              # None: initialised from the UNet; or a ControlNetModel folder to continue from
data_root = 'data/pairs/pncc-512'
control_types = ['pncc']
resolution = 512
batch_size = 4                 # per GPU
accumulative_counts = 1        # gradient accumulation (effective batch = GPUs x batch_size x this)
max_iters = 50000
save_interval = 5000

model = dict(
    type='ControlNetTrainer', pretrained=pretrained, controlnet=controlnet,
    conditioning_channels=3 * len(control_types),
    caption_dropout=0.5,       # empty prompt half the time (ControlNet paper): the control alone must carry the pose
    control_dropout=0.05,      # zero control now and then: the model also learns the unconditioned image
    dtype='bfloat16',          # frozen UNet/text encoder weights (the ControlNet trains in float32 under AMP)
    vae_dtype='float32', gradient_checkpointing=False, noise_seed=0)

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(type='ControlPairDataset', data_root=data_root, control_types=control_types,
                 pipeline=[dict(type='LoadControlPair'), dict(type='ResizeControlPair', size=resolution),
                           dict(type='PackControlPair')]))
train_cfg = dict(max_iters=max_iters)

# bf16 autocast through mmengine's AMP wrapper (float16 also works for SD1.5; use dtype='float16' above then).
optim_wrapper = dict(accumulative_counts=accumulative_counts, optimizer=dict(lr=1e-5, weight_decay=1e-2))

default_hooks = dict(checkpoint=dict(interval=save_interval))
custom_hooks = [
    dict(type='DiffusersExportHook', interval=save_interval),
    # Optional EMA of the ControlNet (checkpoints and exports then hold the averaged weights):
    # dict(type='EMAHook', momentum=1e-4, update_buffers=True),
    # Held-out OKS and a contact sheet every N iterations (docs/control_validation.md):
    # dict(type='ControlValidationHook', data_root='data/pairs/pncc-512-val', control_types=control_types,
    #      scorer=dict(type='MediaPipeScorer'), num_samples=16, interval=save_interval),
]
