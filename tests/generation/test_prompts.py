"""Prompts: drawn from the sample's seed alone, gender-aware, presets and bad templates."""
import pytest

from posedreamer_mm.generation.prompts import PROMPT_PRESETS, PromptSampler


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
