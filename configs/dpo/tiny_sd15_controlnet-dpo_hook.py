# The tiny SD1.5 ControlNet DPO config with its DPOControlHook scored by a real MMPoseScorer (a tiny top-down
# model: tests/scoring/tiny_models.py writes one) on a labelled held-out dataset: what tests/tools/test_dpo_chain.py
# trains on the pairs of configs/dpo/candidates/tiny_sd15_controlnet_pncc-candidates.py.
# python tools/train.py configs/dpo/tiny_sd15_controlnet-dpo_hook.py --cfg-options pretrained=/tmp/tiny/sd15 \
#     controlnet=/tmp/tiny/cn candidates_root=/tmp/cands held_out_root=/tmp/held_out \
#     pose_config=/tmp/tiny/pose.py pose_checkpoint=/tmp/tiny/pose.pth
_base_ = ['./tiny_sd15_controlnet-dpo.py']

held_out_root = 'data/tiny/held_out'   # a generated dataset with labels and stored pncc controls
pose_config = 'data/tiny/pose.py'
pose_checkpoint = 'data/tiny/pose.pth'

# The LoRA of every checkpoint goes to work_dir/dpo_lora/iter_N (the hook's export, diffusers format).
custom_hooks = [
    dict(type='DPOControlHook', data_root=held_out_root, control_types=['pncc'], num_samples=2, interval=2,
         scorer=dict(type='MMPoseScorer', pose_config=pose_config, pose_checkpoint=pose_checkpoint, det_config=None,
                     device='cpu'),
         keypoint_thr=0.0, min_keypoints=1,   # the tiny model's keypoints have low confidences (as its candidates)
         backend=dict(num_inference_steps=2, guidance_scale=1.0), sheet_rows=2, tile=32),
]
