"""tools/report.py (posedreamer_mm/apis/report.py): the numbers against facts fixed outside the report (the
augmentation's ranges, a scorer whose verdict per row is known, rotations built with scipy), the page's files, the
mesh contact sheet against the depth control's silhouette, and one clear error per damaged input."""
import json
import math
import os
import re
import shutil

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posedreamer_mm.apis.filter import run_filter
from posedreamer_mm.apis.generate import run_generate
from posedreamer_mm.apis.report import angle_coverage, camera_numbers, joint_angles_deg, run_report
from posedreamer_mm.generation.reader import DatasetIntegrityError, GeneratedDataReader
from posedreamer_mm.scoring.base import BasePoseScorer, PoseDetections
from tests.configs.test_hmr_configs import ROOT

N, YAW, DIST, FOCAL = 6, (10.0, 40.0), (2.5, 6.0), 890.0


class EvenRowScorer(BasePoseScorer):
    """Stand-in pose estimator (not a model): sees the label's person exactly in even rows (OKS 1, kept) and
    nobody in odd rows (``oks_no_match``); rows are recognised by their pixels."""
    name = 'even_rows'

    def __init__(self, reader):
        self.rows = {reader.load_image(i).tobytes(): (i, np.asarray(reader.sample(i).keypoints_coco17, np.float32))
                     for i in range(len(reader))}

    def predict_batch(self, images):
        out = []
        for img in images:
            row, kp = self.rows[img.tobytes()]
            wh = img.shape[1::-1]
            if row % 2:
                out.append(PoseDetections.empty(wh, self.name))
                continue
            vis = kp[kp[:, 2] > 0, :2]
            box = np.concatenate([vis.min(0) - 5, vis.max(0) + 5])
            out.append(PoseDetections(kp[None, :, :2], (kp[:, 2] > 0).astype(np.float32)[None], box[None],
                                      np.ones(1), wh, self.name))
        return out


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """The demo config at 128 px, headings restricted to YAW, filtered by EvenRowScorer into <root>/filter."""
    root = tmp_path_factory.mktemp('report') / 'data'
    run_generate([str(ROOT / 'configs' / 'demo' / 'render_standin_procedural.py'), '--out', str(root),
                  '--num-samples', str(N), '--no-progress', '--cfg-options', 'crop_size=128',
                  f'generator.source.yaw_range=[{YAW[0]},{YAW[1]}]'])
    stages = [dict(type='ScorePose', scorer=EvenRowScorer(GeneratedDataReader(root))),
              dict(type='FilterByOKS', thr=0.85)]
    run_filter(str(root), str(root / 'filter'), stages=stages, progress=False, report_samples=2)
    return root


@pytest.fixture(scope='module')
def report(dataset):
    return run_report(str(dataset), sheet_samples=2, pool_samples=200)


def test_joint_angles_are_the_rotation_angles_in_degrees():
    pose = np.zeros((2, 21, 3))
    pose[0, 3] = Rotation.from_euler('x', 90, degrees=True).as_rotvec()  # left knee bent 90 degrees
    pose[1, 17] = Rotation.from_euler('zy', [30, 40], degrees=True).as_rotvec()
    angles = joint_angles_deg(pose.reshape(2, 63))
    expected = np.zeros((2, 21))
    expected[0, 3] = 90.0
    expected[1, 17] = np.degrees(Rotation.from_euler('zy', [30, 40], degrees=True).magnitude())
    np.testing.assert_allclose(angles, expected, atol=1e-9)


def test_coverage_counts_the_source_bins_the_dataset_reaches():
    pool = np.repeat(np.array([[5.0], [15.0], [25.0], [35.0]]), 50, 0)  # four 10-degree bins, 50 poses each
    assert angle_coverage(pool, pool)[0] == 1.0
    assert angle_coverage(pool, np.array([[4.0], [16.0]]))[0] == 0.5
    assert angle_coverage(pool, np.array([[95.0]]))[0] == 0.0      # outside the source's bins: no credit
    assert angle_coverage(pool, np.zeros((0, 1)))[0] == 0.0
    rare = np.concatenate([pool, [[150.0]]])                        # one outlier pose: below 1 % of the source
    assert angle_coverage(rare, pool)[0] == 1.0
    assert angle_coverage(rare, pool, min_fraction=0.0)[0] == 0.8


def test_yaw_and_distance_of_rotations_built_independently():
    yaws = np.array([0.0, 30.0, -120.0, 179.0])
    # R = Rx(180) @ Ry(yaw): the canonical y-up body turned about its vertical, then into the OpenCV camera frame.
    rot = Rotation.from_euler('x', 180, degrees=True) * Rotation.from_euler('y', yaws[:, None], degrees=True)
    pelvis = np.array([[0.1, 0.2, 3.0]] * 4)
    out = camera_numbers(rot.as_rotvec(), pelvis)
    np.testing.assert_allclose(out['yaw_deg'], yaws, atol=1e-6)
    np.testing.assert_allclose(out['distance_m'], 3.0)


def test_report_numbers_match_the_augmentation_and_the_filter(report, dataset):
    assert report['num_committed'] == N and report['status'] == 'complete'
    filt = report['filter']
    assert filt['num_scored'] == N and filt['num_kept'] == math.ceil(N / 2) and filt['oks_thr'] == 0.85
    oks_stage = next(s for s in filt['stage_counts'] if s['stage'] == 'FilterByOKS')
    assert oks_stage['dropped'] == {'oks_no_match': N // 2}
    # OKS 1 for the seen rows, 0 for the unmatched ones (the filter records 0 for "no match").
    assert filt['oks']['n'] == N and filt['oks']['mean'] == pytest.approx(math.ceil(N / 2) / N)
    assert filt['oks']['max'] == pytest.approx(1.0) and filt['oks']['min'] == 0.0
    cam = report['camera']
    assert cam['source_focal_px']['min'] == cam['source_focal_px']['max'] == FOCAL
    assert YAW[0] - 1e-3 <= cam['yaw_deg']['min'] <= cam['yaw_deg']['max'] <= YAW[1] + 1e-3
    assert DIST[0] - 1e-3 <= cam['distance_m']['min'] <= cam['distance_m']['max'] <= DIST[1] + 1e-3
    assert set(report['shape']) == {f'beta{k}' for k in range(10)}
    # Procedural poses: the source rebuilt from the manifest, compared per joint.
    assert len(report['pose_coverage']) == 21 and 0 < report['pose_coverage_mean']['all'] <= 1
    assert any('stand-in' in note for note in report['stand_ins'])
    assert any('rendering-baseline' in note for note in report['stand_ins'])
    saved = json.loads((dataset / 'report' / 'report.json').read_text())
    assert saved['filter']['num_kept'] == filt['num_kept'] and saved['camera'] == json.loads(json.dumps(cam))


def test_page_links_only_files_of_its_folder(report):
    out = report['out_dir']
    page = open(report['html']).read()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(srcs) == sorted(['filter.png', 'pose_coverage.png', 'shape_camera.png', 'contact_sheet.png'])
    for src in srcs:
        assert not os.path.isabs(src) and '/' not in src
        assert cv2.imread(os.path.join(out, src)) is not None, src
    assert 'Stand-in' in page and 'FilterByOKS' in page


def test_contact_sheet_draws_the_label_mesh_on_the_person(report, dataset):
    """Tile pair 0 (the first kept sample, row 0): the overlay tile differs from the image tile where the label's
    body is (the stored depth control's foreground, rendered by the generator) and hardly elsewhere."""
    sheet = cv2.imread(os.path.join(report['out_dir'], 'contact_sheet.png'))
    tile = 192
    image_tile, overlay_tile = sheet[:tile, :tile].astype(int), sheet[:tile, tile:2 * tile].astype(int)
    changed = np.abs(overlay_tile - image_tile).max(-1) > 12
    reader = GeneratedDataReader(dataset)
    depth = cv2.imread(reader.control_path(0, 'depth'), cv2.IMREAD_GRAYSCALE)
    body = cv2.resize((depth > 0).astype(np.uint8), (tile, tile), interpolation=cv2.INTER_NEAREST) > 0
    assert body.sum() > 500
    assert changed[body].mean() > 0.9                      # the mesh covers the person
    grown = cv2.dilate(body.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert changed[~grown].mean() < 0.01                   # and nothing far from them (skeleton dots at most)


def test_report_without_filter_shows_every_sample(dataset, tmp_path):
    root = tmp_path / 'copy'
    shutil.copytree(dataset, root, ignore=shutil.ignore_patterns('filter', 'report'))
    rep = run_report(str(root), out_dir=str(tmp_path / 'rep'), sheet_samples=1, pool_samples=50)
    assert 'filter' not in rep and rep['num_committed'] == N
    assert rep['figures']['contact_sheet'] == 'contact_sheet.png'
    sheet = cv2.imread(str(tmp_path / 'rep' / 'contact_sheet.png'))
    assert sheet.shape[1] == 6 * 192                       # 2 samples x (image, overlay) on a 6-column grid


def test_damaged_inputs_end_with_one_error_naming_the_file(dataset, tmp_path, capsys, monkeypatch):
    import importlib.util

    from posedreamer_mm.apis.errors import run_tool
    spec = importlib.util.spec_from_file_location('report_tool', ROOT / 'tools' / 'report.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = tool.main
    monkeypatch.delenv('PDM_TRACEBACK', raising=False)
    with pytest.raises(SystemExit) as exc:
        run_tool(lambda: main([str(tmp_path / 'nothing')]))
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: OutputConflictError:') and 'manifest.json' in err[0]

    root = tmp_path / 'bad'
    shutil.copytree(dataset, root, ignore=shutil.ignore_patterns('report'))
    scores = root / 'filter' / 'scores.jsonl'
    scores.write_text(scores.read_text()[:-40])     # cut mid-record
    with pytest.raises(DatasetIntegrityError, match=re.escape(str(root / 'filter'))):
        run_report(str(root))
    with pytest.raises(SystemExit) as exc:           # a wrong option: argparse names it
        main([str(dataset), '--reference', str(tmp_path / 'missing')])
    assert exc.value.code == 2 and '--reference' in capsys.readouterr().err


def test_fid_and_kid_against_the_kept_images_themselves_are_zero(dataset, tmp_path):
    """The FID/KID hook (posedreamer_mm/apis/image_quality.py): a reference folder holding exactly the kept images
    gives FID 0 at both feature sizes, and the page shows the table."""
    ref = tmp_path / 'ref'
    ref.mkdir()
    reader = GeneratedDataReader(dataset)
    manifest = (dataset / 'filter' / 'manifest_filtered.jsonl').read_text()
    kept = [json.loads(line)['index'] for line in manifest.splitlines()]
    for i in kept:
        shutil.copy(reader.image_path(i), ref / f'{i:03d}.jpg')
    rep = run_report(str(dataset), out_dir=str(tmp_path / 'rep'), reference=str(ref), sheet_samples=1,
                     pool_samples=20)
    metrics = rep['image_quality']['metrics']
    assert metrics['num_gen'] == metrics['num_ref'] == len(kept) == math.ceil(N / 2)
    assert abs(metrics['fid64']) < 1e-6 and abs(metrics['fid2048']) < 1e-6
    assert json.loads((tmp_path / 'rep' / 'image_quality.json').read_text())['metrics'] == metrics
    page = (tmp_path / 'rep' / 'index.html').read_text()
    assert 'Image quality' in page and 'fid2048' in page and '(kept rows only)' in page


def test_hmr_results_read_the_newest_training_curve_and_test_metrics(tmp_path):
    """mmengine's layout: <work_dir>/<ts>/vis_data/scalars.json (losses, then the validation row) for a training
    run, <work_dir>/<ts>/<ts>.json for a test run; the newest of each wins, timings are left out."""
    from posedreamer_mm.apis.report import hmr_results

    def write(path, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    write(tmp_path / '20260101_000000' / 'vis_data' / 'scalars.json', [dict(iter=1, loss=9.0)])
    write(tmp_path / '20260102_000000' / 'vis_data' / 'scalars.json',
          [dict(iter=10, loss=3.0, lr=0.1), dict(iter=20, loss=2.0), {'hmr/heldout/pve_mm': 300.0, 'step': 20}])
    assert hmr_results(str(tmp_path))['loss'] == [(10, 3.0), (20, 2.0)]
    assert hmr_results(str(tmp_path))['metrics'] == {'hmr/heldout/pve_mm': 300.0}  # no test run yet: validation
    write(tmp_path / '20260103_000000' / '20260103_000000.json', [{'hmr/heldout/pve_mm': 250.0, 'time': 0.5}])
    res = hmr_results(str(tmp_path))
    assert res['metrics'] == {'hmr/heldout/pve_mm': 250.0} and res['metrics_from'].endswith('20260103_000000.json')


def test_stand_in_notes_follow_the_manifest():
    """The stand-in body only when no model path is recorded; the rendering-baseline note only for that backend
    (also when the config names it with its scope), none for a diffusion backend."""
    from types import SimpleNamespace

    from posedreamer_mm.apis.report import stand_in_notes

    def notes(model_path, backend):
        manifest = dict(config=dict(body_model=dict(type='SMPLXBodyModel', model_path=model_path),
                                    backend=dict(type=backend)))
        return stand_in_notes(SimpleNamespace(manifest=manifest))
    assert len(notes(None, 'RenderBackend')) == 2
    assert len(notes(None, 'posedreamer_mm.RenderBackend')) == 2
    assert notes('/data/smplx', 'SD15ControlNetBackend') == []
    assert [n[:11] for n in notes(None, 'SD15ControlNetBackend')] == ['Body model:']
