# Rendering-baseline dataset at scale: procedural poses, generic prompts, PNCC + skeleton + depth controls, 512 px
# crops, 1000-sample shards. bash tools/dist_generate.sh configs/generation/render_procedural_generic-512.py 8
# --out data/generated/render_generic (add --cfg-options body_model_dir=/data/smplx for real SMPL-X labels).
# The base of configs/generation/render_amass-yoga_yoga-512.py and configs/generation/backends/*.py.
default_scope = 'posedreamer_mm'

body_model_dir = None
out_dir = 'data/generated/render_procedural_generic-512'
num_samples = 100000
crop_size = 512
seed = 0

body_model = dict(type='SMPLXBodyModel', model_path=body_model_dir, gender='neutral', num_betas=10)

generator = dict(
    type='DatasetGenerator',
    # One body model per process, handed to every step below whose constructor takes `body_model`.
    body_model=body_model,
    source=dict(
        type='AugmentedSource',
        source=dict(type='ProceduralPoseSource', num_samples=num_samples, seed=seed, sampling='truncnorm'),
        seed=seed, betas_range=2.0, yaw_range=(-180.0, 180.0), distance_range=(2.5, 6.0), focal=890.0,
        img_size=(1024, 1024)),
    # The per-sample steps before the backend (posedreamer_mm/generation/transforms.py, docs/generation.md); a
    # registered transform of your own goes anywhere in the list.
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='RenderControls',
             controls=[dict(type='PNCCRenderer'), dict(type='SkeletonRenderer'), dict(type='DepthRenderer')]),
        dict(type='COCO17Visibility', min_visible=8),
        dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic')),
    ],
    backend=dict(type='RenderBackend', batch_size=16),
    stages=[],
    writer=dict(shard_size=1000, image_format='jpg', jpeg_quality=95),
    num_samples=num_samples,
    seed=seed,
    num_workers=4,
)
