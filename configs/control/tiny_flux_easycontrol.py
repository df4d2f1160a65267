# Tiny EasyControl condition-LoRA training for tests: as tiny_flux_control-lora.py (same folder, data, rank and
# alpha), the condition at half the image size (16 px for 32 px images, as the reference's 512 for 1024).
_base_ = ['./tiny_flux_control-lora.py']

cond_size = 16
model = dict(type='EasyControlTrainer', cond_size=cond_size)
