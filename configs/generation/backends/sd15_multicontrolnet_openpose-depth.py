# SD1.5 + two ControlNets at once (Multi-ControlNet): OpenPose skeleton and depth, each with its scale.
# The lllyasviel ControlNet 1.1 folders (control_v11p_sd15_openpose, control_v11f1p_sd15_depth) fit as they are.
_base_ = ['../render_procedural_generic-512.py']

sd15_dir = 'weights/stable-diffusion-v1-5'
openpose_controlnet_dir = 'weights/control_v11p_sd15_openpose'
depth_controlnet_dir = 'weights/control_v11f1p_sd15_depth'
out_dir = 'data/generated/sd15_openpose-depth-512'

generator = dict(
    # _delete_: the base's RenderBackend settings mean nothing to a diffusion backend.
    backend=dict(
        _delete_=True, type='SD15ControlNetBackend', weights=sd15_dir,
        controlnets=[dict(weights=openpose_controlnet_dir, control_type='openpose', scale=1.0),
                     dict(weights=depth_controlnet_dir, control_type='depth', scale=0.6)],
        batch_size=16, num_inference_steps=20, guidance_scale=7.5, scheduler='UniPCMultistepScheduler',
        dtype='float16', device='cuda'))
