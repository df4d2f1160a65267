"""Runner set-up shared by ``tools/train.py`` and ``tools/test.py``."""
from .launch import (build_runner, load_config, merge_cfg_options, merge_test_args, merge_train_args,
                     parse_tool_args, setup_cpu_distributed)

__all__ = ['build_runner', 'load_config', 'merge_cfg_options', 'merge_train_args', 'merge_test_args', 'parse_tool_args',
           'setup_cpu_distributed']
