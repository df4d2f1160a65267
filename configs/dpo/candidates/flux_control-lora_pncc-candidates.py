# DPO candidates (docs/dpo_pairs.md): 4 images per control from FLUX.1-dev + a PNCC control LoRA, each with its own
# seed; the input of configs/dpo/flux_control-lora-dpo_pncc.py. Generate, score, pair (all resumable):
# bash tools/dist_generate.sh configs/dpo/candidates/flux_control-lora_pncc-candidates.py 8 \
#     --out data/candidates/flux-pncc-1024 --cfg-options flux_dir=/weights/FLUX.1-dev control_lora=/work/lora
# python tools/filter.py data/candidates/flux-pncc-1024 configs/dpo/candidates/flux_control-lora_pncc-candidates.py
# python tools/make_dpo_pairs.py data/candidates/flux-pncc-1024
_base_ = ['../../generation/render_procedural_generic-512.py']

flux_dir = 'weights/FLUX.1-dev'
control_lora = 'weights/flux-pncc-control-lora'
out_dir = 'data/candidates/flux-pncc-1024'
crop_size = 1024
num_controls = 20000
candidates_per_sample = 4

generator = dict(
    source=dict(source=dict(num_samples=num_controls)),
    # The base's pipeline at 1024 px crops (a list is replaced whole: every step is restated).
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
        dict(type='COCO17Visibility', min_visible=8),
        dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic')),
    ],
    # _delete_: the base's RenderBackend settings mean nothing to a diffusion backend.
    backend=dict(
        _delete_=True, type='FluxControlBackend', weights=flux_dir, control_type='pncc',
        loras=[dict(path=control_lora, weight=1.0, name='control')],
        batch_size=2, num_inference_steps=28, guidance_scale=10.0, dtype='bfloat16', device='cuda'),
    writer=dict(shard_size=1000, image_format='jpg', jpeg_quality=95, save_controls=True),
    num_samples=num_controls, candidates_per_sample=candidates_per_sample)

filter_stages = [dict(type='ScorePose', scorer=dict(type='MediaPipeScorer'))]
