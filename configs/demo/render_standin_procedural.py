# The main job's embedded default (no downloads): procedural SMPL-X poses with the reference's augmentation (random
# betas, upright random yaw, camera distance, focal 890 px at 1024x1024) -> PNCC, skeleton and depth controls at one
# 512 px body-crop camera -> the RENDERING BASELINE backend (a lit, clothing-coloured body over a procedural
# background; not diffusion) -> a sharded dataset with exact labels. Run: bash tools/demo.sh.
default_scope = 'posedreamer_mm'

# Directory with the licensed SMPLX_{NEUTRAL,MALE,FEMALE}.npz; None = the open SMPL-X stand-in (docs/bodies.md).
body_model_dir = None
out_dir = 'outputs/demo'
num_samples = 24
crop_size = 512
seed = 0

body_model = dict(type='SMPLXBodyModel', model_path=body_model_dir, gender='neutral', num_betas=10)

generator = dict(
    type='DatasetGenerator',
    # One body model per process, handed to every step below whose constructor takes `body_model`.
    body_model=body_model,
    # The source is longer than num_samples so --num-samples can raise it; sample i is the same either way.
    source=dict(
        type='AugmentedSource',
        source=dict(type='ProceduralPoseSource', num_samples=100000, seed=seed, sampling='truncnorm'),
        seed=seed, betas_range=2.0, yaw_range=(-180.0, 180.0), distance_range=(2.5, 6.0), focal=890.0,
        img_size=(1024, 1024)),
    # The per-sample steps before the backend (posedreamer_mm/generation/transforms.py); add your own registered
    # transform anywhere in the list.
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        # Rendered at the crop camera; stored under their control_type.
        dict(type='RenderControls',
             controls=[dict(type='PNCCRenderer'), dict(type='SkeletonRenderer'), dict(type='DepthRenderer')]),
        dict(type='COCO17Visibility', min_visible=8),
        dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic')),
    ],
    backend=dict(type='RenderBackend', batch_size=8),
    stages=[],
    writer=dict(shard_size=8, image_format='jpg', jpeg_quality=95, save_controls=True),
    num_samples=num_samples,
    seed=seed,
    num_workers=0,
)
