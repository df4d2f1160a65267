# FLUX.1-dev + the reference's PNCC control model: an EasyControl condition LoRA (EasyControlFluxBackend; trained by
# configs/control/flux_easycontrol_pncc.py, docs/control_training_flux.md), the PNCC condition at 512 px for
# 1024 px images; further LoRAs (DPO, style) stack on the base model.
_base_ = ['../render_procedural_generic-512.py']

flux_dir = 'weights/FLUX.1-dev'
condition_lora = 'weights/flux-pncc-easycontrol/lora.safetensors'
out_dir = 'data/generated/flux_easycontrol_pncc-1024'

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
        _delete_=True, type='EasyControlFluxBackend', weights=flux_dir, control_type='pncc',
        condition=dict(path=condition_lora, weight=1.0),
        cond_size=512,  # the size it was trained at (the file's metadata says so too)
        batch_size=2, num_inference_steps=28, guidance_scale=3.5, dtype='bfloat16', device='cuda'))
