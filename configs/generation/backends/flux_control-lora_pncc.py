# FLUX.1-dev + a PNCC control LoRA (FluxControlPipeline: the form a trained channel-concatenated control takes in
# diffusers, as black-forest-labs/FLUX.1-Depth-dev-lora), stacked with a DPO LoRA and a style LoRA, each weighted.
_base_ = ['../render_procedural_generic-512.py']

flux_dir = 'weights/FLUX.1-dev'
control_lora = 'weights/flux-pncc-control-lora'
dpo_lora = 'weights/flux-pncc-dpo-lora'
style_lora = 'weights/flux-photo-style-lora'
out_dir = 'data/generated/flux_control-lora_pncc-1024'

crop_size = 1024

generator = dict(
    # The base's pipeline at 1024 px crops (a list is replaced whole: every step is restated).
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='RenderControls',
             controls=[dict(type='PNCCRenderer'), dict(type='SkeletonRenderer'), dict(type='DepthRenderer')]),
        dict(type='COCO17Visibility', min_visible=8),
        dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic')),
    ],
    # _delete_: the base's RenderBackend settings mean nothing to a diffusion backend.
    backend=dict(
        _delete_=True, type='FluxControlBackend', weights=flux_dir, control_type='pncc',
        loras=[dict(path=control_lora, weight=1.0, name='control'),  # first: widens the transformer's input
               dict(path=dpo_lora, weight=0.8, name='dpo'),
               dict(path=style_lora, weight=0.5, name='style')],
        batch_size=2, num_inference_steps=28, guidance_scale=10.0, dtype='bfloat16', device='cuda'))
