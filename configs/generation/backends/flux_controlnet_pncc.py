# FLUX.1-dev + a FLUX ControlNet (FluxControlNetPipeline, InstantX layout) trained on PNCC, 1024 px crops.
_base_ = ['../render_procedural_generic-512.py']

flux_dir = 'weights/FLUX.1-dev'
controlnet_dir = 'weights/flux-controlnet-pncc'
out_dir = 'data/generated/flux_controlnet_pncc-1024'

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
        _delete_=True, type='FluxControlNetBackend', weights=flux_dir,
        controlnets=dict(weights=controlnet_dir, control_type='pncc', scale=0.7),
        batch_size=2, num_inference_steps=28, guidance_scale=3.5, dtype='bfloat16', device='cuda'))
