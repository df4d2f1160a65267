# Domain preset "yoga" = a pose source of yoga poses + the yoga prompts. The poses: AMASS-format SMPL-X motion
# files of yoga (e.g. MoYo's, https://moyo.is.tue.mpg.de, licensed; put them under yoga_poses_dir), subsampled to
# distinct poses, each augmented 4x (shape, yaw, camera). Gendered AMASS fits use the SMPL-X model of their gender:
# body_model_dir must then hold SMPLX_MALE.npz / SMPLX_FEMALE.npz too (the run stops naming a missing one).
# Everything else (controls, crop, backend, writer) is the base's.
_base_ = ['./render_procedural_generic-512.py']

body_model_dir = 'data/body_models/smplx'
yoga_poses_dir = 'data/yoga_amass/'
out_dir = 'data/generated/render_amass-yoga'
num_samples = None  # the whole source
crop_size = 512
seed = 0

body_model = dict(type='SMPLXBodyModel', model_path=body_model_dir, gender='neutral', num_betas=16)

generator = dict(
    # The base's dicts hold its own body_model_dir and num_samples: the final values are set here.
    body_model=body_model,
    # _delete_: the base's procedural source and its augmentation settings do not apply to AMASS files.
    source=dict(
        _delete_=True,
        type='AugmentedSource',
        source=dict(type='AMASSSource', data_root=yoga_poses_dir, target_fps=2.0, gender='from_file'),
        repeats=4, seed=seed, betas_range=None, yaw_range=(-180.0, 180.0), distance_range=(2.5, 5.0), focal=890.0,
        img_size=(1024, 1024)),
    # The base's pipeline with the yoga prompts (a list is replaced whole: every step is restated).
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='RenderControls',
             controls=[dict(type='PNCCRenderer'), dict(type='SkeletonRenderer'), dict(type='DepthRenderer')]),
        dict(type='COCO17Visibility', min_visible=8),
        dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='yoga')),
    ],
    num_samples=num_samples,
)
