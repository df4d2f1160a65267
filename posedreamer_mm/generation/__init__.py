"""Generation: bodies -> control images -> (diffusion) images, written as a labelled dataset.

Today: the control stage (:mod:`.control_stage`), which the diffusion ``DatasetGenerator`` builds on.
"""
from .control_stage import ControlStageResult, coco17_keypoints, run_control_stage
from .contact_sheet import make_contact_sheet

__all__ = ['ControlStageResult', 'coco17_keypoints', 'run_control_stage', 'make_contact_sheet']
