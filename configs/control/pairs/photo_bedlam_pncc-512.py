# Control-training pairs from BEDLAM: each labelled person's PNCC (and skeleton) control and the BEDLAM photo cropped
# by the same crop camera, captioned from a template; too small / truncated / padded / crowded people are dropped and
# counted (docs/control_pairs.md).
# bash tools/dist_generate.sh configs/control/pairs/photo_bedlam_pncc-512.py 8 --cfg-options
#   bedlam_label_root=/data/bedlam/labels bedlam_img_root=/data/bedlam/images body_model_dir=/data/smplx
# Train on the output with ControlPairDataset (configs/control/*.py, data_root=out_dir).
default_scope = 'posedreamer_mm'

body_model_dir = None                    # SMPL-X folder (None: the open stand-in, for smoke runs only)
bedlam_label_root = 'data/bedlam/labels'  # BEDLAM's <scene>.npz label files
bedlam_img_root = 'data/bedlam/images'    # <scene>/png/<imgname>
out_dir = 'data/pairs/photo_bedlam_pncc-512'
crop_size = 512
min_crop_px = 256                        # BEDLAM is 1280x720: at most 2x enlarged at 512 px
seed = 0

generator = dict(
    type='DatasetGenerator',
    body_model=dict(type='SMPLXBodyModel', model_path=body_model_dir, gender='neutral', num_betas=10),
    # Any HMR dataset works here (posedreamer_mm/generation/photo_pairs.py): it knows each person's photo, camera and
    # fit, and the other people of the photo (for the crowding check).
    source=dict(type='HMRPhotoSource',
                dataset=dict(type='BEDLAMHMRDataset', label_root=bedlam_label_root, img_root=bedlam_img_root)),
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='PhotoPairCheck', min_crop_px=min_crop_px, max_truncation=0.05, max_padding=0.1,
             max_other_overlap=0.1),
        dict(type='LoadPhotoCrop'),
        dict(type='RenderControls', controls=[dict(type='PNCCRenderer'), dict(type='SkeletonRenderer')]),
        dict(type='CaptionFromTemplate',
             templates=['a photo of {person}', 'a photograph of {person}', 'a realistic photo of {person}']),
    ],
    backend=dict(type='PhotoCropBackend', batch_size=16),
    stages=[],
    writer=dict(shard_size=1000, image_format='jpg', jpeg_quality=95, save_controls=True),
    num_samples=None,                    # every person of the dataset
    seed=seed,
    num_workers=4,
)
