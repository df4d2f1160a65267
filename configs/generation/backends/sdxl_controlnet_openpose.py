# SDXL + an OpenPose ControlNet (StableDiffusionXLControlNetPipeline), 1024 px crops.
# Weights: sdxl_dir = a diffusers SDXL folder (model_index.json + unet/ vae/ text_encoder(_2)/ tokenizer(_2)/
# scheduler/), controlnet_dir = a ControlNetModel folder for SDXL (e.g. thibaud/controlnet-openpose-sdxl-1.0).
_base_ = ['../render_procedural_generic-512.py']

sdxl_dir = 'weights/stable-diffusion-xl-base-1.0'
controlnet_dir = 'weights/controlnet-openpose-sdxl-1.0'
out_dir = 'data/generated/sdxl_controlnet_openpose-1024'

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
        _delete_=True, type='SDXLControlNetBackend', weights=sdxl_dir,
        controlnets=dict(weights=controlnet_dir, control_type='openpose', scale=0.8),
        batch_size=4, num_inference_steps=25, guidance_scale=5.0, scheduler='EulerAncestralDiscreteScheduler',
        dtype='float16', device='cuda'))
