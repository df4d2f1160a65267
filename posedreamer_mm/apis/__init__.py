"""What tools and notebooks call: config loading, launcher set-up, runner building (and inference)."""
from .launch import (
    build_runner,
    load_config,
    merge_test_args,
    merge_train_args,
    parse_tool_args,
    setup_cpu_distributed,
    setup_slurm_env,
    shutdown_distributed,
)
from .overrides import ConfigError, load_with_overrides

__all__ = ['ConfigError', 'build_runner', 'load_config', 'load_with_overrides', 'merge_train_args',
           'merge_test_args', 'parse_tool_args', 'setup_cpu_distributed', 'setup_slurm_env', 'shutdown_distributed']
from .inference import default_camera, inference_hmr, init_hmr_model  # noqa: F401  (HMR inference)
