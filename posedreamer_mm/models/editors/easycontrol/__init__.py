"""EasyControl-style condition LoRA for FLUX (docs/control_training_flux.md): attention processors on diffusers'
FluxTransformer2DModel, the generation wrapper and the trainer."""
from .easycontrol_trainer import LORA_FILE, EasyControlTrainer
from .pipeline import FluxEasyControlPipeline, condition_ids, condition_pixels, encode_condition
from .processor import (
    ConditionCache,
    ConditionLoRA,
    EasyControlAttnProcessor,
    add_condition_lora,
    condition_lora_state_dict,
    load_condition_lora,
    read_condition_lora,
    run_condition_pass,
    save_condition_lora,
)

__all__ = ['EasyControlTrainer', 'LORA_FILE', 'FluxEasyControlPipeline', 'condition_ids', 'condition_pixels',
           'encode_condition', 'ConditionCache', 'ConditionLoRA', 'EasyControlAttnProcessor', 'add_condition_lora',
           'condition_lora_state_dict', 'load_condition_lora', 'read_condition_lora', 'run_condition_pass',
           'save_condition_lora']
