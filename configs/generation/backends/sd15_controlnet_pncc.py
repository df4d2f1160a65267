# SD1.5 + a PNCC ControlNet (StableDiffusionControlNetPipeline) on the procedural-poses dataset of the base config.
# Weights: sd15_dir = a diffusers SD1.5 folder (model_index.json + unet/ vae/ text_encoder/ tokenizer/ scheduler/),
# controlnet_dir = a ControlNetModel folder (config.json + diffusion_pytorch_model.safetensors) trained on PNCC.
# python tools/generate.py configs/generation/backends/sd15_controlnet_pncc.py \
#     --cfg-options sd15_dir=/weights/sd15 controlnet_dir=/weights/controlnet-pncc-sd15
# Layouts, LoRAs and seeds: docs/backends.md.
_base_ = ['../render_procedural_generic-512.py']

sd15_dir = 'weights/stable-diffusion-v1-5'
controlnet_dir = 'weights/controlnet-pncc-sd15'
out_dir = 'data/generated/sd15_controlnet_pncc-512'

generator = dict(
    # _delete_: the base's RenderBackend settings mean nothing to a diffusion backend.
    backend=dict(
        _delete_=True, type='SD15ControlNetBackend', weights=sd15_dir,
        controlnets=dict(weights=controlnet_dir, control_type='pncc', scale=1.0),
        loras=[],  # e.g. dict(path='weights/dpo-lora', weight=0.8, name='dpo')
        batch_size=16, num_inference_steps=20, guidance_scale=7.5, scheduler='UniPCMultistepScheduler',
        dtype='float16', device='cuda', channels_last=False, compile=False))
