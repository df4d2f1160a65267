"""A backend's ``scheduler=dict(type=...)`` is a lookup in the DIFFUSION_SCHEDULERS registry."""
import diffusers
import pytest

from posedreamer_mm.generation.backends.schedulers import build_scheduler, register_diffusers_schedulers
from posedreamer_mm.registry import DIFFUSION_SCHEDULERS


def test_every_diffusers_scheduler_class_is_registered_under_its_name():
    names = register_diffusers_schedulers()
    assert register_diffusers_schedulers() == names  # idempotent
    for name in ('DDIMScheduler', 'UniPCMultistepScheduler', 'FlowMatchEulerDiscreteScheduler'):
        assert DIFFUSION_SCHEDULERS.get(name) is getattr(diffusers, name)
    assert all(issubclass(DIFFUSION_SCHEDULERS.get(n), diffusers.SchedulerMixin) for n in names)
    assert 'SchedulerMixin' not in names and not any(n.endswith('Output') for n in names)


def test_build_scheduler_takes_the_current_config_and_overrides():
    current = diffusers.DDIMScheduler(num_train_timesteps=500, beta_schedule='scaled_linear')
    new = build_scheduler(dict(type='UniPCMultistepScheduler', solver_order=1), current)
    assert type(new) is diffusers.UniPCMultistepScheduler
    assert new.config.num_train_timesteps == 500 and new.config.solver_order == 1
    assert build_scheduler(None, current) is current
    with pytest.raises(ValueError, match="'NoSuchScheduler' is not a diffusers scheduler.*DIFFUSION_SCHEDULERS"):
        build_scheduler('NoSuchScheduler', current)
