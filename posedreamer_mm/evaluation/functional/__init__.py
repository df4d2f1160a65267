"""Pure numpy/torch evaluation maths, each tested against a reference implementation on the same numbers."""
from .oks import COCO17_SIGMAS, control_accuracy, detection_as_ground_truth, keypoint_oks

__all__ = ['COCO17_SIGMAS', 'keypoint_oks', 'detection_as_ground_truth', 'control_accuracy']
