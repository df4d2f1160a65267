# The main job's embedded default (no downloads): procedural SMPL-X poses with the reference's augmentation
# (random betas, upright random yaw, camera distance, focal 890 px at 1024x1024), rendered as PNCC, skeleton,
# depth, normal and shaded control crops with exact labels. Run: bash tools/demo.sh (or python tools/demo.py).
default_scope = 'posedreamer_mm'

# Directory with the licensed SMPLX_NEUTRAL.npz; None writes the open SMPL-X stand-in into <out>/body_models.
body_model_dir = None
num_samples = 24
control_size = 512

body_model = dict(type='SMPLXBodyModel', model_path=body_model_dir, gender='neutral', num_betas=10)

source = dict(
    type='AugmentedSource',
    source=dict(type='ProceduralPoseSource', num_samples=num_samples, seed=0, sampling='truncnorm'),
    seed=0, betas_range=2.0, yaw_range=(-180.0, 180.0), distance_range=(2.5, 6.0), focal=890.0,
    img_size=(1024, 1024))

# One crop camera for all controls (same size and margin), so one label fits every control image.
controls = dict(
    pncc=dict(type='PNCCRenderer', size=control_size, margin=0.1),
    skeleton=dict(type='SkeletonRenderer', size=control_size, margin=0.1),
    depth=dict(type='DepthRenderer', size=control_size, margin=0.1),
    normal=dict(type='NormalRenderer', size=control_size, margin=0.1),
    shaded=dict(type='ShadedRenderer', size=control_size, margin=0.1),
)
batch_size = 16
