"""Prompts: a template plus attribute lists, sampled per sample from its seed and stored in its record.

::

    prompts = PROMPT_SAMPLERS.build(dict(type='PromptSampler', preset='yoga'))
    prompt, negative, attributes = prompts(seed=1234, gender='female')
    # 'a full-body photo of a woman in her thirties doing yoga, slim build, wearing ... '

A preset (:data:`PROMPT_PRESETS`) names a template, attribute lists and a negative prompt; ``templates``,
``attributes`` and ``negative_prompt`` given in the config replace or extend it. Attribute ``person`` follows the
sample's gender when it is ``'male'`` or ``'female'`` (a neutral body may be drawn as anyone). A domain preset such
as ``yoga`` pairs with a pose source of that domain's poses (``configs/generation/``).
"""
from __future__ import annotations

import string
from collections.abc import Mapping, Sequence

import numpy as np

from posedreamer_mm.registry import PROMPT_SAMPLERS

_COMMON = dict(
    age=['in their twenties', 'in their thirties', 'in their forties', 'in their fifties', 'in their sixties',
         'in their late teens'],
    body_type=['slim build', 'average build', 'athletic build', 'muscular build', 'heavy build', 'tall and lean'],
    lighting=['soft daylight', 'golden hour light', 'overcast light', 'studio lighting', 'warm indoor light',
              'dramatic side light'],
    camera=['35mm photo', '50mm lens, shallow depth of field', 'DSLR photo, sharp focus', 'candid photo',
            'wide-angle shot', 'professional photograph'],
)
_PERSON = dict(neutral=['a man', 'a woman', 'a person'], male=['a man'], female=['a woman'])

#: Built-in presets: ``templates`` (one is drawn per sample), ``attributes`` and ``negative_prompt``.
PROMPT_PRESETS: dict[str, dict] = dict(
    generic=dict(
        templates=['a full-body photo of {person} {age}, {body_type}, wearing {clothing}, {scene}, {lighting}, '
                   '{camera}',
                   '{person} {age} {scene}, {body_type}, wearing {clothing}, {lighting}, {camera}'],
        attributes=dict(_COMMON, clothing=[
            'a t-shirt and jeans', 'a business suit', 'a summer dress', 'a hoodie and sweatpants',
            'a winter coat and boots', 'sportswear', 'a shirt and chinos', 'a leather jacket and black trousers'],
            scene=['in a city street', 'in a park', 'in a living room', 'on a beach', 'in an office',
                   'in a forest', 'in a kitchen', 'on a rooftop']),
        negative_prompt='cartoon, drawing, 3d render, deformed, extra limbs, missing limbs, blurry, low quality'),
    yoga=dict(
        templates=['a full-body photo of {person} {age} doing yoga, {body_type}, wearing {clothing}, {scene}, '
                   '{lighting}, {camera}'],
        attributes=dict(_COMMON, clothing=[
            'leggings and a sports bra', 'a tank top and yoga pants', 'loose linen clothes', 'a fitted long-sleeve '
            'top and leggings', 'shorts and a t-shirt'],
            scene=['on a yoga mat in a bright studio', 'on a wooden deck by the sea', 'in a quiet park at sunrise',
                   'in a living room on a mat', 'on a rooftop terrace', 'in a gym with mirrors']),
        negative_prompt='cartoon, drawing, 3d render, deformed, extra limbs, missing limbs, blurry, low quality'),
)


@PROMPT_SAMPLERS.register_module()
class PromptSampler:
    """Draws a caption per sample from templates and attribute lists, deterministically from the sample's seed.

    Args:
        preset: Name in :data:`PROMPT_PRESETS` (``'generic'``, ``'yoga'``) or ``None`` for none.
        templates: Replace the preset's templates (``str.format`` fields name attributes).
        attributes: Added to (and overriding) the preset's attribute lists.
        negative_prompt: Replaces the preset's negative prompt.
    """

    def __init__(self, preset: str | None = 'generic', templates: Sequence[str] | None = None,
                 attributes: Mapping[str, Sequence[str]] | None = None, negative_prompt: str | None = None) -> None:
        if preset is not None and preset not in PROMPT_PRESETS:
            raise ValueError(f'unknown prompt preset {preset!r}; choose one of {sorted(PROMPT_PRESETS)} or give '
                             'templates and attributes')
        base = PROMPT_PRESETS.get(preset, {}) if preset else {}
        self.preset = preset
        self.templates = list(templates if templates is not None else base.get('templates', []))
        self.attributes = {k: list(v) for k, v in {**base.get('attributes', {}), **(attributes or {})}.items()}
        self.negative_prompt = negative_prompt if negative_prompt is not None else base.get('negative_prompt', '')
        if not self.templates:
            raise ValueError('PromptSampler needs at least one template (a preset or templates=[...])')
        names = set(self.attributes) | {'person'}
        for template in self.templates:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
            except ValueError as err:
                raise ValueError(f'prompt template {template!r} is not a valid format string: {err}') from None
            bad = [f for f in fields if not f.isidentifier()]
            if bad:
                raise ValueError(f'prompt template {template!r} has the field(s) {["{" + f + "}" for f in bad]}: every '
                                 f'field must name an attribute list (have {sorted(names)}); write a literal brace '
                                 'as {{ or }}')
            missing = set(fields) - names
            if missing:
                raise ValueError(f'prompt template {template!r} uses {sorted(missing)} but no attribute list '
                                 f'defines them (have {sorted(self.attributes)})')
            try:  # conversions and format specs too: a template that cannot be filled fails here, not per sample
                template.format(**{name: 'x' for name in names})
            except (ValueError, KeyError, IndexError, AttributeError) as err:
                raise ValueError(f'prompt template {template!r} cannot be filled: {type(err).__name__}: {err}') \
                    from None
        empty = [k for k, v in self.attributes.items() if not v]
        if empty:
            raise ValueError(f'prompt attribute lists {empty} are empty')

    def __call__(self, seed: int, gender: str = 'neutral') -> tuple[str, str, dict[str, str]]:
        """Returns ``(prompt, negative_prompt, attributes)`` for one sample.

        The draw depends only on ``seed`` and ``gender``: attributes are drawn in sorted-name order from a
        generator seeded with the sample's seed, so adding a sample or a rank changes nothing.
        """
        rng = np.random.default_rng([int(seed) % (2 ** 63), 0x70726F6D])  # 'prom': prompts' own stream
        lists = {**self.attributes, 'person': self.attributes.get('person', _PERSON.get(gender, _PERSON['neutral']))}
        chosen = {k: str(lists[k][rng.integers(len(lists[k]))]) for k in sorted(lists)}
        template_index = int(rng.integers(len(self.templates)))
        prompt = self.templates[template_index].format(**chosen)
        return prompt, self.negative_prompt, dict(chosen, template=str(template_index))

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(preset={self.preset!r}, {len(self.templates)} templates, '
                f'attributes={sorted(self.attributes)})')
