"""Captions of training pairs: from templates filled with the record's metadata, or from an image-to-text model.

A photo's caption must describe that photo, so the attribute-drawing :class:`~posedreamer_mm.generation.prompts.
PromptSampler` (which invents clothing and scenes for generated images) does not suit photo pairs:

- :class:`CaptionFromTemplate` (a pipeline step): a template filled with what the record knows (the person from
  the label's gender, the dataset, any string in ``sample.meta``), e.g. ``'a photo of {person}'``;
- :class:`CaptionImage` (a stage after the backend, where the image exists): an image-to-text model loaded from a
  local folder with transformers' ``AutoProcessor`` / ``AutoModelForImageTextToText`` (BLIP, GIT, ...), which
  replaces the caption or is appended to the template's.

For generated pairs (render or diffusion backends) the generator's own ``SamplePrompt`` caption is the one the
image was made from and stays.
"""
from __future__ import annotations

import os.path as osp
import string
from collections.abc import Sequence

import numpy as np
from mmcv.transforms import BaseTransform

from posedreamer_mm.registry import TRANSFORMS

#: ``{person}`` of a caption, by the label's gender (a neutral fit may show anyone).
PERSON_BY_GENDER = dict(male='a man', female='a woman', neutral='a person')


def _fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ValueError(f'caption template {template!r} is not a valid format string: {err}') from None


@TRANSFORMS.register_module()
class CaptionFromTemplate(BaseTransform):
    """The caption from a template filled with the record's metadata; the template is drawn from the seed.

    Fields: ``{person}`` (:data:`PERSON_BY_GENDER` of ``sample.gender``), ``{dataset}`` (``meta['dataset']``, else
    the sample's source) and any key of ``sample.meta`` whose value is a string (e.g. MPII's activity, if a source
    stores it). A record without a field the drawn template needs fails with an error naming the field (counted
    per sample by the generator).

    Required Keys:
        - seed
        - sample: its ``gender``, ``source`` and ``meta``

    Added Keys:
        - prompt
        - negative_prompt
        - prompt_attributes: ``template`` (the drawn template's index) and the fields used

    Args:
        templates: ``str.format`` templates; one is drawn per sample from its seed.
        negative_prompt: Stored with every caption.
    """

    def __init__(self, templates: Sequence[str] = ('a photo of {person}',), negative_prompt: str = '') -> None:
        self.templates = [str(t) for t in ([templates] if isinstance(templates, str) else templates)]
        if not self.templates:
            raise ValueError('CaptionFromTemplate needs at least one template')
        for template in self.templates:
            bad = [f for f in _fields(template) if not f.isidentifier()]
            if bad:
                raise ValueError(f'caption template {template!r}: fields must be names, got {bad}')
        self.negative_prompt = str(negative_prompt)

    def transform(self, results: dict) -> dict:
        sample = results['sample']
        rng = np.random.default_rng([int(results['seed']) % (2 ** 63), 0x63617074])  # 'capt': its own stream
        index = int(rng.integers(len(self.templates)))
        template = self.templates[index]
        values = {k: v for k, v in sample.meta.items() if isinstance(v, str)}
        values.update(person=PERSON_BY_GENDER.get(sample.gender, 'a person'),
                      dataset=str(sample.meta.get('dataset', sample.source)))
        used = _fields(template)
        missing = [f for f in used if f not in values]
        if missing:
            raise ValueError(f'caption template {template!r} needs {missing}, which sample {sample.id!r} does not '
                             f'have (fields: {sorted(values)})')
        results.update(prompt=template.format(**values), negative_prompt=self.negative_prompt,
                       prompt_attributes=dict({f: values[f] for f in used}, template=str(index)))
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}({len(self.templates)} templates)'


@TRANSFORMS.register_module()
class CaptionImage(BaseTransform):
    """Captions the image with an image-to-text model from a local folder (a generator stage after the backend).

    The folder is what ``save_pretrained`` writes for a model and its processor (e.g. a BLIP or GIT captioning
    checkpoint downloaded beforehand); nothing is fetched (``local_files_only``). Decoding is greedy, so a caption
    depends only on its image.

    Required Keys:
        - img: ``(H, W, 3)`` uint8 RGB (the backend's image: the photo crop for photo pairs)

    Optional Keys:
        - prompt: kept in front of the model's caption with ``combine='append'``

    Modified Keys:
        - prompt
        - prompt_attributes: ``caption_model`` (the folder's name) and ``caption`` (the model's text) added

    Args:
        model_path: Local folder with the model (``AutoModelForImageTextToText``) and its processor
            (``AutoProcessor``).
        text: Text the model continues (BLIP's conditional captioning, e.g. ``'a photo of'``); ``None``: none.
        combine: ``'replace'`` the caption, or ``'append'`` the model's text to the existing prompt after
            ``', '``.
        max_new_tokens: Longest caption, in tokens.
        device: Torch device of the model.

    Raises:
        FileNotFoundError: ``model_path`` is not a folder.
    """

    def __init__(self, model_path: str, text: str | None = None, combine: str = 'replace', max_new_tokens: int = 30,
                 device: str = 'cpu') -> None:
        if combine not in ('replace', 'append'):
            raise ValueError(f"CaptionImage: combine must be 'replace' or 'append', got {combine!r}")
        if not osp.isdir(model_path):
            raise FileNotFoundError(f'CaptionImage: model_path {model_path!r} is not a folder (expected the '
                                    'save_pretrained folder of an image-to-text model and its processor)')
        from transformers import AutoModelForImageTextToText, AutoProcessor
        self.model_path, self.text, self.combine = model_path, text, combine
        self.max_new_tokens, self.device = int(max_new_tokens), device
        self.processor = AutoProcessor.from_pretrained(model_path, local_files_only=True)
        self.model = AutoModelForImageTextToText.from_pretrained(model_path, local_files_only=True).to(device).eval()

    def caption(self, img: np.ndarray) -> str:
        """The model's caption of one ``(H, W, 3)`` uint8 RGB image."""
        import torch
        kwargs = dict(images=np.asarray(img), return_tensors='pt')
        if self.text is not None:
            kwargs['text'] = self.text
        inputs = self.processor(**kwargs).to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out, skip_special_tokens=True)[0].strip()

    def transform(self, results: dict) -> dict:
        text = self.caption(results['img'])
        prompt = results.get('prompt', '')
        results['prompt'] = f'{prompt}, {text}' if self.combine == 'append' and prompt else text
        attributes = dict(results.get('prompt_attributes', {}))
        attributes.update(caption_model=osp.basename(osp.normpath(self.model_path)), caption=text)
        results['prompt_attributes'] = attributes
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(model_path={self.model_path!r}, combine={self.combine!r})'


__all__ = ['CaptionFromTemplate', 'CaptionImage', 'PERSON_BY_GENDER']
