"""Generation: bodies -> control images -> images, written as a labelled, sharded dataset (docs/generation.md).

:class:`DatasetGenerator` is the main job; :class:`GeneratedDataReader` reads what it wrote
(format: docs/dataset_format.md); the backends live in :mod:`posedreamer_mm.generation.backends`.
"""
from .captions import CaptionFromTemplate, CaptionImage
from .coco_export import export_coco_keypoints
from .generator import DatasetGenerator, GenerationError, config_fingerprint
from .photo_pairs import HMRPhotoSource, LoadPhotoCrop, PhotoPairCheck, crop_photo
from .prompts import PROMPT_PRESETS, PromptSampler
from .reader import GeneratedDataReader
from .transforms import BodyCropCamera, BodyForward, COCO17Visibility, RenderControls, SamplePrompt
from .writer import OutputConflictError, ShardedDatasetWriter, ShardWriteError

__all__ = ['DatasetGenerator', 'GenerationError', 'config_fingerprint', 'PROMPT_PRESETS', 'PromptSampler',
           'GeneratedDataReader', 'export_coco_keypoints', 'BodyCropCamera', 'BodyForward', 'COCO17Visibility',
           'RenderControls', 'SamplePrompt', 'OutputConflictError', 'ShardedDatasetWriter', 'ShardWriteError',
           'HMRPhotoSource', 'LoadPhotoCrop', 'PhotoPairCheck', 'crop_photo', 'CaptionFromTemplate', 'CaptionImage']
