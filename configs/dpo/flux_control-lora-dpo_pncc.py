# Flow-DPO LoRA for a FLUX.1-dev PNCC control LoRA (docs/dpo.md). The policy is the control LoRA of
# configs/control/flux_control-lora_pncc.py, loaded from its mmengine checkpoint (policy_checkpoint; same rank);
# the DPO LoRA (rank 128) goes on the transformer's attention projections on top of it, and the reference is the
# control model with the DPO LoRA off.
# python tools/train.py configs/dpo/flux_control-lora-dpo_pncc.py \
#     --cfg-options pretrained=/weights/FLUX.1-dev control_checkpoint=/work/flux_cl/iter_20000.pth \
#     candidates_root=/data/candidates-flux val_root=/data/val-1024
# Generation: FluxControlBackend with loras=[dict(path=<control LoRA export>, name='control'),
# dict(path=work_dir/dpo_lora/iter_N, name='dpo')] (the control LoRA first: it widens x_embedder).
# Hyper-parameters (the reference): lr 5e-5, batch 1 x accumulation 16, rank 128, beta 100 (Flow-DPO),
# logit-normal timesteps; bf16 base with gradient checkpointing.
_base_ = ['../_base_/diffusion_runtime.py']  # loop, AMP, hooks, logging, seed

pretrained = 'weights/FLUX.1-dev'
control_checkpoint = 'work_dirs/flux_control-lora_pncc/iter_20000.pth'
control_rank = 64                    # the control LoRA's rank in that training
candidates_root = 'data/candidates/flux-pncc-1024'
pairs_file = 'dpo_pairs.jsonl'
val_root = 'data/val/pncc-1024'
control_types = ['pncc']
resolution = 1024
batch_size = 1
accumulative_counts = 16
max_iters = 1000 * accumulative_counts  # 1000 optimiser steps
save_interval = 100 * accumulative_counts
# On-line pair refresh (docs/dpo.md, "On-line pair refresh"): None = train on pairs_file only; a number remakes the
# pairs from the current LoRA's candidates of the same controls every that many iterations, e.g.
# --cfg-options refresh_interval=4800 (every 300 optimiser steps).
refresh_interval = None
refresh = None if refresh_interval is None else dict(
    interval=refresh_interval, controls=candidates_root, candidates=4, min_gap=0.05, min_winner=0.5)

model = dict(
    type='DiffusionDPO',
    policy=dict(type='FluxControlLoRATrainer', pretrained=pretrained, rank=control_rank, alpha=control_rank,
                weight_dtype='bfloat16', gradient_checkpointing=True, guidance_scale=10.0,
                max_sequence_length=512, logit_mean=0.0, logit_std=1.0, flow_shift=1.0,
                caption_dropout=0.0, control_dropout=0.0, noise_seed=0),
    policy_checkpoint=control_checkpoint,
    loss=dict(beta=100.0, loss_type='sigmoid'),
    lora=dict(r=128, lora_alpha=128, target_modules=['to_q', 'to_k', 'to_v', 'to_out.0'], on='denoiser'))

train_dataloader = dict(
    batch_size=batch_size,
    dataset=dict(type='DPOPairDataset', data_root=candidates_root, ann_file=pairs_file, control_types=control_types,
                 pipeline=[dict(type='LoadDPOPair'), dict(type='ResizeDPOPair', size=resolution),
                           dict(type='PackDPOPair')]))
train_cfg = dict(max_iters=max_iters)

optim_wrapper = dict(accumulative_counts=accumulative_counts, optimizer=dict(lr=5e-5, weight_decay=1e-4))

default_hooks = dict(checkpoint=dict(interval=save_interval))
custom_hooks = [
    dict(type='DiffusersExportHook', interval=save_interval),
    dict(type='DPOControlHook', data_root=val_root, control_types=control_types,
         scorer=dict(type='MediaPipeScorer'), num_samples=64, interval=save_interval, size=resolution,
         backend=dict(num_inference_steps=28, guidance_scale=10.0), batch_size=2, refresh=refresh),
]
