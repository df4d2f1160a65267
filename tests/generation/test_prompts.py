"""Prompts: drawn from the sample's seed alone, gender-aware, presets and bad templates."""
import pytest

from posedreamer_mm.generation.prompts import PROMPT_PRESETS, PromptSampler
from posedreamer_mm.registry import TRANSFORMS


def test_same_seed_same_prompt_and_attributes_are_recorded():
    sampler = PromptSampler('generic')
    prompt, negative, attrs = sampler(12345, 'neutral')
    assert (prompt, negative, attrs) == PromptSampler('generic')(12345, 'neutral')
    template = PROMPT_PRESETS['generic']['templates'][int(attrs['template'])]
    assert prompt == template.format(**attrs)
    assert negative == PROMPT_PRESETS['generic']['negative_prompt']
    assert len({sampler(s)[0] for s in range(50)}) > 40  # seeds spread over the attribute lists


def test_person_follows_the_gender_and_yoga_preset():
    for seed in range(20):
        assert PromptSampler('generic')(seed, 'female')[2]['person'] == 'a woman'
        assert PromptSampler('generic')(seed, 'male')[2]['person'] == 'a man'
    prompt, _, attrs = PromptSampler('yoga')(3, 'male')
    assert 'doing yoga' in prompt and attrs['scene'] in PROMPT_PRESETS['yoga']['attributes']['scene']


def test_overrides_and_bad_templates():
    sampler = PromptSampler('generic', templates=['{person} in {place}'], attributes=dict(place=['Rome']))
    assert sampler(1, 'male')[0] == 'a man in Rome'
    with pytest.raises(ValueError, match=r"uses \['weather'\]"):
        PromptSampler('generic', templates=['{person} in {weather}'])
    with pytest.raises(ValueError, match='unknown prompt preset'):
        PromptSampler('gothic')


@pytest.mark.parametrize('template', ['{person} {}', '{person} in {0}', '{person.name} walking', '{person!z}',
                                      '{person} {scene'])
def test_a_template_the_sampler_cannot_fill_is_refused_when_built(template):
    """issue 16 §5: a template with ``{}`` passed the check and failed every sample of the run."""
    with pytest.raises(ValueError, match='template'):
        PromptSampler('generic', templates=[template])


def test_a_bad_template_in_a_config_fails_before_the_first_sample():
    cfg = dict(type='SamplePrompt', prompts=dict(type='PromptSampler', preset='generic', templates=['{person} {}']))
    with pytest.raises(ValueError, match=r"field\(s\) \['\{\}'\]"):
        TRANSFORMS.build(cfg)
