"""Each compat fix: it is applied, it is needed, and it does what it says."""
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import posedreamer_mm
from posedreamer_mm.utils import compat

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)


def test_fixes_applied_on_import():
    assert posedreamer_mm.COMPAT_FIXES['mmpretrain_multimodal_off']
    assert posedreamer_mm.COMPAT_FIXES['runner_checkpoint_types']
    assert posedreamer_mm.COMPAT_FIXES['mmcv_ops_fallback'] == (not compat.mmcv_has_compiled_ops())


@pytest.mark.skipif(compat.mmcv_has_compiled_ops(), reason='full mmcv installed: the fallback is not used')
def test_upstream_models_import_and_use_fallback_ops():
    import mmcv.ops
    import mmdet.models  # noqa: F401
    import mmpose.models  # noqa: F401
    from mmdet.models.layers import multiclass_nms
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    assert mmcv.ops.IS_POSEDREAMER_FALLBACK
    # mmdet's own post-processing runs on the fallback batched_nms.
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]])  # 2 classes (+ no background column)
    dets, labels = multiclass_nms(boxes, torch.cat([scores, torch.zeros(3, 1)], 1), 0.05,
                                  dict(type='nms', iou_threshold=0.5), max_num=10)
    assert dets.shape == (2, 5) and labels.tolist() == [0, 1]
    # A two-stage detector's RoI extractor builds RoIAlign by name from mmcv.ops.
    extractor = SingleRoIExtractor(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                                   out_channels=4, featmap_strides=[4])
    feats = extractor([torch.randn(1, 4, 16, 16)], torch.tensor([[0, 4.0, 4.0, 40.0, 40.0]]))
    assert feats.shape == (1, 4, 7, 7)


@pytest.mark.skipif(compat.mmcv_has_compiled_ops(), reason='full mmcv installed: the fallback is not used')
def test_unserved_op_imports_but_raises_a_clear_error_when_used():
    from mmcv.ops import MultiScaleDeformableAttention
    from mmcv.ops.deform_conv import DeformConv2d
    with pytest.raises(ImportError, match='needs mmcv compiled with ops') as err:
        MultiScaleDeformableAttention(embed_dims=8)
    assert 'mmcv-lite' in str(err.value) and 'MultiScaleDeformableAttention' in str(err.value)
    with pytest.raises(ImportError, match='DeformConv2d'):
        DeformConv2d(4, 4, 3)


def test_fallback_steps_aside_for_full_mmcv(tmp_path):
    """With a compiled mmcv (faked: a package with ``_ext``) the real ``mmcv.ops`` is used."""
    pkg = tmp_path / 'mmcv'
    (pkg / 'ops').mkdir(parents=True)
    (pkg / '__init__.py').write_text("__version__ = '2.1.0'\n")
    (pkg / '_ext.py').write_text('')
    (pkg / 'ops' / '__init__.py').write_text("nms = 'compiled nms'\n")
    res = _run(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location('compat_under_test', {compat.__file__!r})
        compat = importlib.util.module_from_spec(spec); spec.loader.exec_module(compat)
        assert compat.mmcv_has_compiled_ops()
        assert compat.install_mmcv_ops_fallback() is False
        import mmcv.ops
        print(mmcv.ops.nms)
        """, env={'PYTHONPATH': str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == 'compiled nms'


def test_mmpretrain_switch_is_needed_and_works():
    import transformers
    if int(transformers.__version__.split('.')[0]) < 5:
        pytest.skip('the switch is only needed with transformers >= 5')
    without = _run('import mmpretrain.models')
    assert without.returncode != 0, 'mmpretrain now imports under transformers 5: the switch can go'
    with_fix = _run("""
        import posedreamer_mm
        from mmpretrain.utils import dependency
        import mmpretrain.models, mmdet.models
        assert dependency.WITH_MULTIMODAL is False
        from mmpretrain.registry import MODELS
        print(MODELS.get('VisionTransformer').__name__)
        """)
    assert with_fix.returncode == 0, with_fix.stderr
    assert with_fix.stdout.strip() == 'VisionTransformer'


class _Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_runner_checkpoint_types_load_safely_and_others_still_fail():
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub.get_instance('compat_test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/loss', 0.25)
    ckpt = {'meta': {'epoch': 1, 'seed': np.int64(3)}, 'message_hub': hub.state_dict(),
            'state_dict': {'w': torch.ones(2)}, 'arr': np.arange(3.0)}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    loaded = torch.load(io.BytesIO(buf.getvalue()))  # torch's default: weights_only=True
    hist = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(hist, HistoryBuffer) and hist.mean() == pytest.approx(0.375)
    assert hist.statistics('max') == 0.5  # statistics methods restored after loading
    np.testing.assert_array_equal(loaded['arr'], np.arange(3.0))
    evil = io.BytesIO()
    torch.save({'x': _Evil()}, evil)
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(io.BytesIO(evil.getvalue()))
