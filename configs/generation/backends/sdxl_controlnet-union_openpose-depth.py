# SDXL + ControlNet-Union (StableDiffusionXLControlNetUnionPipeline): skeleton and depth through one Union model
# (xinsir/controlnet-union-sdxl-1.0 ProMax modes: openpose 0, depth 1, normal 4), 1024 px crops.
_base_ = ['../render_procedural_generic-512.py']

sdxl_dir = 'weights/stable-diffusion-xl-base-1.0'
union_controlnet_dir = 'weights/controlnet-union-sdxl-1.0-promax'
out_dir = 'data/generated/sdxl_union_openpose-depth-1024'

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
        _delete_=True, type='SDXLControlNetUnionBackend', weights=sdxl_dir,
        controlnet=dict(weights=union_controlnet_dir, scale=1.0), control_types=['openpose', 'depth'],
        batch_size=4, num_inference_steps=25, guidance_scale=5.0, scheduler='EulerAncestralDiscreteScheduler',
        dtype='float16', device='cuda'))
