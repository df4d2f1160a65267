# Tiny DPO candidates for tests (CPU, seconds): the shape of sd15_controlnet_pncc-candidates.py on the tiny random
# SD1.5 + ControlNet folders of posedreamer_mm/testing/diffusion.py (write_tiny_sd15, write_tiny_controlnet), 32 px,
# scored by MMPoseScorer with a tiny top-down model (tests/scoring/tiny_models.py writes one; whole image as the
# person box). The chain of tests/tools/test_dpo_chain.py:
# python tools/generate.py configs/dpo/candidates/tiny_sd15_controlnet_pncc-candidates.py --out /tmp/cands \
#     --cfg-options sd15_dir=/tmp/tiny/sd15 controlnet_dir=/tmp/tiny/cn
# python tools/filter.py /tmp/cands configs/dpo/candidates/tiny_sd15_controlnet_pncc-candidates.py \
#     --cfg-options pose_config=/tmp/tiny/pose.py pose_checkpoint=/tmp/tiny/pose.pth
# python tools/make_dpo_pairs.py /tmp/cands
# With a DPO LoRA (tools/train.py configs/dpo/tiny_sd15_controlnet-dpo.py exports one per checkpoint), the same
# command with --cfg-options dpo_lora=WORK_DIR/diffusers/iter_N generates the same controls and seeds with it.
_base_ = ['../../generation/render_procedural_generic-512.py']

sd15_dir = 'data/tiny/sd15'
controlnet_dir = 'data/tiny/cn'
dpo_lora = None                   # a LoRA folder in diffusers format (pytorch_lora_weights.safetensors)
pose_config = 'data/tiny/pose.py'
pose_checkpoint = 'data/tiny/pose.pth'
out_dir = 'data/tiny/candidates'
crop_size = 32                    # the tiny VAE shrinks 2x: 16 x 16 latents
num_controls = 4
candidates_per_sample = 3

generator = dict(
    source=dict(source=dict(num_samples=num_controls), distance_range=(2.5, 3.0)),
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
        dict(type='COCO17Visibility', min_visible=0),
        dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic')),
    ],
    # _delete_: the base's RenderBackend settings mean nothing to a diffusion backend.
    backend=dict(
        _delete_=True, type='SD15ControlNetBackend', weights=sd15_dir,
        controlnets=dict(weights=controlnet_dir, control_type='pncc', scale=1.0),
        loras=[] if dpo_lora is None else [dict(path=dpo_lora, name='dpo')],
        batch_size=candidates_per_sample * num_controls, num_inference_steps=2, guidance_scale=1.0,
        dtype='float32', device='cpu'),
    writer=dict(shard_size=candidates_per_sample * num_controls, image_format='png', save_controls=True),
    num_samples=num_controls, candidates_per_sample=candidates_per_sample, num_workers=0)

# tools/filter.py's stages: the OKS of every candidate. The tiny model's keypoints have low confidences, so every
# keypoint counts (keypoint_thr 0, one keypoint); a real estimator keeps the reference 0.3 / 4.
filter_stages = [dict(type='ScorePose', keypoint_thr=0.0, min_keypoints=1,
                      scorer=dict(type='MMPoseScorer', pose_config=pose_config, pose_checkpoint=pose_checkpoint,
                                  det_config=None, device='cpu'))]
