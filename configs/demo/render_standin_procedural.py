# The main job's embedded default (no downloads): the rendering-baseline generation config at small size.
# Procedural SMPL-X poses with the reference's augmentation (random betas, upright random yaw, camera distance,
# focal 890 px at 1024x1024) -> PNCC, skeleton and depth controls at one 512 px body-crop camera -> the RENDERING
# BASELINE backend (a lit, clothing-coloured body over a procedural background; not diffusion) -> a sharded dataset
# with exact labels. Run: bash tools/demo.sh.
# Everything but the size comes from the base: its top-level variables (body_model_dir = None, the open SMPL-X
# stand-in of docs/bodies.md; crop_size; seed) are overridden with --cfg-options as usual (docs/configs.md).
_base_ = ['../generation/render_procedural_generic-512.py']

out_dir = 'outputs/demo/dataset'  # bash tools/demo.sh writes the held-out set, HMR run and report beside it
num_samples = 24

generator = dict(
    # The base's source keeps its 100000 poses, so --num-samples can raise num_samples; sample i is the same.
    backend=dict(batch_size=8),
    writer=dict(shard_size=8, save_controls=True),
    num_samples=num_samples,
    num_workers=0,
)
