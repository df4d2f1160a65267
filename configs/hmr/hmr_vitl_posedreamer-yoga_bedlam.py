# Domain variant of hmr_vitl_posedreamer_bedlam.py: PoseDreamer data generated from yoga poses replaces half of
# the randomly sampled PoseDreamer data; evaluated on MPII's yoga activity (NeuralAnnot pseudo-GT subset).
_base_ = ['./hmr_vitl_posedreamer_bedlam.py']

posedreamer_yoga_root = 'data/posedreamer_yoga/'  # labels + images generated from a yoga pose source
mpii_ann_file = 'data/mpii/annotations/mpii_val.json'
mpii_smplx_file = 'data/mpii/annotations/mpii_val_smplx.json'
mpii_img_root = 'data/mpii/images/'
mpii_attribute_file = 'data/mpii/annotations/mpii_activities.json'  # {file_name: {act_name: ...}}

posedreamer_yoga_train = dict(type='PoseDreamerHMRDataset', dataset_name='posedreamer_yoga',
                              label_root=posedreamer_yoga_root)
# Random : yoga PoseDreamer samples 1:1 (each factor scales its dataset's length), BEDLAM as in the base.
train_dataloader = dict(dataset=dict(
    datasets=[{{_base_.posedreamer_train}}, posedreamer_yoga_train, {{_base_.bedlam_train}}],
    sample_ratio_factor=[0.5, 0.5, 1.0]))
val_dataloader = dict(dataset=dict(
    _delete_=True,  # a different dataset type: replace the UBody dict instead of merging into it
    type='NeuralAnnotHMRDataset', dataset_name='mpii_yoga', ann_file=mpii_ann_file, smplx_file=mpii_smplx_file,
    img_root=mpii_img_root, keypoint_format='mpii16', smplx_model_path={{_base_.body_model_dir}},
    attributes=dict(act_name='yoga*'), attribute_file=mpii_attribute_file, test_mode=True,
    pipeline={{_base_.val_pipeline}}))
test_dataloader = val_dataloader
default_hooks = dict(checkpoint=dict(save_best='hmr/mpii_yoga/pa_pve_mm'))
