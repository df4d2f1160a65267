"""posedreamer_mm/utils/pickling.py: the one way objects with a lock and per-process state pickle."""
import pickle
import threading

from posedreamer_mm.render.rasterizer import MeshRasterizer
from posedreamer_mm.scoring.mediapipe_scorer import MediaPipeScorer
from posedreamer_mm.scoring.mmpose_scorer import MMPoseScorer
from posedreamer_mm.utils.pickling import PicklesWithoutLocalState


class _Cached(PicklesWithoutLocalState):
    _process_local = dict(_cache=dict, _model=None)

    def __init__(self):
        self.setting = 3
        self._cache = {'gl': object()}
        self._model = object()
        self._lock = threading.Lock()


def test_copy_has_its_settings_fresh_local_state_and_an_unheld_lock():
    obj = _Cached()
    with obj._lock:   # pickled while another thread holds the lock (a worker pool started mid-render)
        copy = pickle.loads(pickle.dumps(obj))
    assert copy.setting == 3 and copy._cache == {} and copy._model is None
    assert copy._lock is not obj._lock and copy._lock.acquire(blocking=False)
    assert obj._cache and obj._model is not None   # the original keeps its state


def test_rasterizer_and_scorers_share_the_one_definition():
    for cls in (MeshRasterizer, MMPoseScorer, MediaPipeScorer):
        assert issubclass(cls, PicklesWithoutLocalState)
        assert cls.__getstate__ is PicklesWithoutLocalState.__getstate__, cls
    assert MMPoseScorer.__setstate__ is MediaPipeScorer.__setstate__ is PicklesWithoutLocalState.__setstate__
    rast = pickle.loads(pickle.dumps(MeshRasterizer(near=0.5, far=9.0)))
    assert (rast.near, rast.far, rast._states) == (0.5, 9.0, {}) and rast._lock.acquire(blocking=False)
