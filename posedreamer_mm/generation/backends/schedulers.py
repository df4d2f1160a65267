"""diffusers scheduler classes in the ``DIFFUSION_SCHEDULERS`` registry, so a backend's ``scheduler=dict(type=...)``
is a registry lookup like every other ``type`` in a config (mmagic registers diffusers' schedulers the same way).

Registration is lazy (:func:`register_diffusers_schedulers` on first use): importing diffusers costs seconds,
which worker processes that never build a scheduler should not pay.
"""
from __future__ import annotations

from posedreamer_mm.registry import DIFFUSION_SCHEDULERS


def register_diffusers_schedulers() -> list[str]:
    """Registers every ``diffusers.SchedulerMixin`` subclass diffusers exports (idempotent); returns their names."""
    import diffusers
    names = []
    for name in dir(diffusers):
        if not name.endswith('Scheduler'):
            continue
        try:
            cls = getattr(diffusers, name)  # diffusers' lazy module may fail on an optional dependency
        except (ImportError, AttributeError, RuntimeError):
            continue
        if isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin):
            if name not in DIFFUSION_SCHEDULERS.module_dict:
                DIFFUSION_SCHEDULERS.register_module(name=name, module=cls)
            names.append(name)
    return names


def build_scheduler(spec: str | dict | None, current):
    """A scheduler of the registered class ``spec`` names (``'UniPCMultistepScheduler'`` or
    ``dict(type=..., **config overrides)``), made from the pipeline's scheduler config; ``None`` keeps ``current``.

    Raises:
        ValueError: for a name that is not a registered diffusers scheduler, listing the schedulers compatible with
            the pipeline.
    """
    if spec is None:
        return current
    register_diffusers_schedulers()
    spec = dict(type=spec) if isinstance(spec, str) else dict(spec)
    name = spec.pop('type')
    cls = DIFFUSION_SCHEDULERS.get(name) if isinstance(name, str) else name
    if cls is None:
        options = sorted(c.__name__ for c in getattr(current, 'compatibles', []))
        raise ValueError(f'scheduler {name!r} is not a diffusers scheduler class (not in the DIFFUSION_SCHEDULERS '
                         f'registry); compatible with this pipeline: {options}')
    return cls.from_config(current.config, **spec)
