# Control-training pairs from COCO train2017 people with NeuralAnnot SMPL-X pseudo-GT (MPII and UBody: the same with
# their keypoint json, keypoint_format='mpii16' for MPII): PNCC control + the COCO photo by the same crop camera.
# COCO photos are small and crowded: the checks drop far more people than on BEDLAM (docs/control_pairs.md).
# bash tools/dist_generate.sh configs/control/pairs/photo_coco-neuralannot_pncc-512.py 8 --cfg-options
#   coco_root=/data/coco body_model_dir=/data/smplx
default_scope = 'posedreamer_mm'

body_model_dir = None                    # SMPL-X folder; NeuralAnnot hands need its hands_mean (smplx_model_path)
coco_root = 'data/coco'
coco_ann_file = 'annotations/person_keypoints_train2017.json'
neuralannot_file = 'annotations/coco_train_SMPLX_NeuralAnnot.json'
coco_img_dir = 'train2017'                 # under coco_root
out_dir = 'data/pairs/photo_coco-neuralannot_pncc-512'
crop_size = 512
min_crop_px = 192
seed = 0

generator = dict(
    type='DatasetGenerator',
    body_model=dict(type='SMPLXBodyModel', model_path=body_model_dir, gender='neutral', num_betas=10),
    source=dict(type='HMRPhotoSource',
                dataset=dict(type='NeuralAnnotHMRDataset', dataset_name='coco', data_root=coco_root,
                             ann_file=coco_ann_file, smplx_file=neuralannot_file, img_root=coco_img_dir,
                             keypoint_format='coco17', smplx_model_path=body_model_dir, min_keypoints=6)),
    pipeline=[
        dict(type='BodyForward'),
        dict(type='BodyCropCamera', size=crop_size, margin=0.1),
        dict(type='PhotoPairCheck', min_crop_px=min_crop_px, max_truncation=0.05, max_padding=0.1,
             max_other_overlap=0.1, required_parts=('global_orient', 'body_pose', 'betas', 'transl', 'hands')),
        dict(type='LoadPhotoCrop'),
        dict(type='RenderControls', controls=[dict(type='PNCCRenderer')]),
        dict(type='CaptionFromTemplate', templates=['a photo of {person}', 'a photograph of {person}']),
    ],
    backend=dict(type='PhotoCropBackend', batch_size=16),
    stages=[],
    writer=dict(shard_size=1000, image_format='jpg', jpeg_quality=95, save_controls=True),
    num_samples=None,
    seed=seed,
    num_workers=4,
)
