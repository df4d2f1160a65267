# The config the README promises: ViT-L HMR on PoseDreamer + BEDLAM (configs/hmr/hmr_vitl_posedreamer_bedlam.py).
#   python tools/train.py configs/hmr_vitl_posedreamer_bedlam.py --cfg-options body_model_dir=/models/smplx/
_base_ = ['./hmr/hmr_vitl_posedreamer_bedlam.py']
