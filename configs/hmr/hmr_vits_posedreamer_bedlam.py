# ViT-S variant of hmr_vitl_posedreamer_bedlam.py (ViTPose-S initialisation; ~4x the training throughput).
_base_ = ['./hmr_vitl_posedreamer_bedlam.py']

backbone_checkpoint = 'checkpoints/td-hm_ViTPose-small_8xb64-210e_coco-256x192.pth'
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.75))
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint=backbone_checkpoint,
                                prefix={{_base_.backbone_checkpoint_prefix}})),
    head=dict(in_channels=384, embed_dims=512, feedforward_channels=1024))
