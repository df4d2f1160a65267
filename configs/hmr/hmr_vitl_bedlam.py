# BEDLAM-only baseline of hmr_vitl_posedreamer_bedlam.py (same model, schedule and evaluation).
_base_ = ['./hmr_vitl_posedreamer_bedlam.py']

train_dataloader = dict(dataset=dict(datasets=[{{_base_.bedlam_train}}], sample_ratio_factor=[1.0]))
