# DPO candidates (docs/dpo_pairs.md): 4 images per control from an SD1.5 PNCC ControlNet, each with its own seed;
# the input of configs/dpo/sd15_controlnet-dpo_pncc.py. Three commands, all resumable:
# bash tools/dist_generate.sh configs/dpo/candidates/sd15_controlnet_pncc-candidates.py 8 \
#     --out data/candidates/sd15-pncc-512 --cfg-options sd15_dir=/weights/sd15 body_model_dir=/data/smplx \
#     controlnet_dir=/work/cn/diffusers/iter_50000
# python tools/filter.py data/candidates/sd15-pncc-512 configs/dpo/candidates/sd15_controlnet_pncc-candidates.py \
#     --num-workers 8                                  # scores.jsonl: OKS of every candidate (filter_stages below)
# python tools/make_dpo_pairs.py data/candidates/sd15-pncc-512   # dpo_pairs.jsonl + its report
_base_ = ['../../generation/render_procedural_generic-512.py']

sd15_dir = 'weights/stable-diffusion-v1-5'
controlnet_dir = 'work_dirs/sd15_controlnet_pncc/diffusers/iter_50000'
out_dir = 'data/candidates/sd15-pncc-512'
num_controls = 20000      # poses (controls); the dataset has num_controls * candidates_per_sample rows
candidates_per_sample = 4

generator = dict(
    source=dict(source=dict(num_samples=num_controls)),
    # _delete_: the base's RenderBackend settings mean nothing to a diffusion backend.
    backend=dict(
        _delete_=True, type='SD15ControlNetBackend', weights=sd15_dir,
        controlnets=dict(weights=controlnet_dir, control_type='pncc', scale=1.0), loras=[],
        batch_size=16, num_inference_steps=20, guidance_scale=7.5, scheduler='UniPCMultistepScheduler',
        dtype='float16', device='cuda'),
    # 1000 rows = 250 controls per shard: a control's candidates stay in one shard (its controls rendered once)
    writer=dict(shard_size=1000, image_format='jpg', jpeg_quality=95, save_controls=True),
    num_samples=num_controls, candidates_per_sample=candidates_per_sample)

# tools/filter.py's stages for this dataset: the OKS of every candidate, nothing dropped (pairing decides).
filter_stages = [dict(type='ScorePose', scorer=dict(type='MediaPipeScorer'))]
