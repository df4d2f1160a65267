# Tiny SDXL ControlNet training (posedreamer_mm/testing/diffusion.py write_tiny_sdxl): the same trainer reads the
# family from the folder (text_encoder_2 -> SDXL: pooled text embeddings and time ids).
_base_ = ['./tiny_sd15_controlnet.py']

pretrained = 'data/tiny/sdxl'
model = dict(pretrained=pretrained)
