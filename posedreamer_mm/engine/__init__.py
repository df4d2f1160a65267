"""OpenMMLab ``engine``: training-loop machinery: hooks in ``engine/hooks/`` (DPO control alignment, control
validation, per-sample difficulty), loops and optimizer constructors. Nothing is registered here yet; the hooks
land with the DPO and hard-sample-mining stages. Samplers live in ``datasets/samplers/``, tool logic in ``apis/``.
"""
from . import hooks  # noqa: E402,F401  (registers the hooks in HOOKS)
