# Domain preset "yoga" = a pose source of yoga poses + the yoga prompts. The poses: AMASS-format SMPL-X motion
# files of yoga (e.g. MoYo's, https://moyo.is.tue.mpg.de, licensed; put them under yoga_poses_dir), subsampled to
# distinct poses, each augmented 4x (shape, yaw, camera). Gendered AMASS fits use the SMPL-X model of their gender:
# body_model_dir must then hold SMPLX_MALE.npz / SMPLX_FEMALE.npz too (the run stops naming a missing one).
default_scope = 'posedreamer_mm'

body_model_dir = 'data/body_models/smplx'
yoga_poses_dir = 'data/yoga_amass/'
out_dir = 'data/generated/render_amass-yoga'
num_samples = None  # the whole source
crop_size = 512
seed = 0

body_model = dict(type='SMPLXBodyModel', model_path=body_model_dir, gender='neutral', num_betas=16)

generator = dict(
    type='DatasetGenerator',
    body_model=body_model,
    source=dict(
        type='AugmentedSource',
        source=dict(type='AMASSSource', data_root=yoga_poses_dir, target_fps=2.0, gender='from_file'),
        repeats=4, seed=seed, betas_range=None, yaw_range=(-180.0, 180.0), distance_range=(2.5, 5.0), focal=890.0,
        img_size=(1024, 1024)),
    controls=[dict(type='PNCCRenderer'), dict(type='SkeletonRenderer'), dict(type='DepthRenderer')],
    prompts=dict(type='PromptSampler', preset='yoga'),
    backend=dict(type='RenderBackend', batch_size=16, body_model=body_model),
    stages=[],
    writer=dict(type='ShardedDatasetWriter', shard_size=1000, image_format='jpg', jpeg_quality=95),
    num_samples=num_samples,
    seed=seed,
    crop_size=crop_size,
    crop_margin=0.1,
    min_visible_keypoints=8,
    num_workers=4,
)
