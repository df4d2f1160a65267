"""tools/image_quality.py: a generated dataset (and its kept rows) or an image folder against a reference folder."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posedreamer_mm.body.sample import BodySample
from tests.evaluation.test_image_quality import add_noise, crops

ROOT = Path(__file__).resolve().parents[2]


def load_tool():
    spec = importlib.util.spec_from_file_location('image_quality_tool', ROOT / 'tools' / 'image_quality.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_folder(path: Path, images) -> Path:
    path.mkdir(parents=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(path / f'{i:03d}.png'), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope='module')
def sets(tmp_path_factory):
    """A generated dataset of 4 crops (PNG, 2 shards), a folder of the same crops, a folder of noisy crops."""
    from posedreamer_mm.generation.writer import ShardedDatasetWriter
    images = crops(4, seed=7)
    base = tmp_path_factory.mktemp('image_quality')
    data = base / 'generated'
    writer = ShardedDatasetWriter(shard_size=2, image_format='png', save_controls=False)
    writer.prepare_output(str(data), dict(fingerprint='image-quality-tool-test', config={}, num_samples=4))
    for shard in range(writer.num_shards(4)):
        builder = writer.open_shard(str(data), shard, 4)
        for i in builder.indices:
            sample = BodySample(id=f's{i}', img_size=np.array([96, 96]))
            builder.add(i, dict(sample=sample, img=images[i], seed=i, scores={}))
        builder.commit()
    writer.finalize(str(data), 4)
    return dict(images=images, data=data, same=write_folder(base / 'same', images),
                noisy=write_folder(base / 'noisy', add_noise(images, 40.0)))


def test_tool_on_a_generated_dataset_against_its_own_images_is_zero(sets, tmp_path):
    out = tmp_path / 'metrics.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'image_quality.py'), str(sets['data']), '--ref',
                           str(sets['same']), '--kid-subsets', '3', '--out', str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    m, protocol = result['metrics'], result['protocol']
    assert m['num_gen'] == 4 and m['num_ref'] == 4
    assert abs(m['fid64']) < 1e-6 and abs(m['fid2048']) < 1e-6      # the same pixels through both readers
    assert {'kid64_mean', 'kid2048_mean', 'kid64_std', 'kid2048_std'} <= set(m) and 'is_mean' not in m
    assert protocol['generated_kind'] == 'generated dataset' and protocol['resize'] == 'antialias'
    assert protocol['network_sha256'] and protocol['input_size'] == 299 and protocol['fid_dims'] == [64, 2048]
    table = proc.stdout
    assert 'fid64' in table and 'fid2048' in table and 'written to' in table
    assert 'generated' in proc.stderr          # the progress bar


def test_kept_rows_and_folder_input_match_the_features_of_the_images(sets, tmp_path):
    from posedreamer_mm.evaluation.functional.image_quality import fid_from_features
    from posedreamer_mm.evaluation.inception import InceptionFeatureNetwork
    kept = tmp_path / 'manifest_filtered.jsonl'
    kept.write_text(''.join(json.dumps(dict(id=f's{i}', index=i)) + '\n' for i in (0, 2, 3)))
    tool = load_tool()
    result = tool.main([str(sets['data']), '--ref', str(sets['noisy']), '--kept', str(kept), '--fid-dims', '64',
                        '--no-kid', '--no-progress'])
    m = result['metrics']
    assert m['num_gen'] == 3 and set(m) == {'fid64', 'num_gen', 'num_ref'}
    network = InceptionFeatureNetwork()
    gen = network([sets['images'][i] for i in (0, 2, 3)])[64].numpy()
    noisy = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(sets['noisy'].glob('*.png'))]
    assert m['fid64'] == pytest.approx(fid_from_features(network(noisy)[64].numpy(), gen), rel=1e-6)
    assert m['fid64'] > 1.0
    # An image folder as GEN, limited to 2 images.
    two = tool.main([str(sets['same']), '--ref', str(sets['noisy']), '--max-images', '2', '--fid-dims', '64',
                     '--no-kid', '--no-progress'])
    assert two['metrics']['num_gen'] == 2 and two['protocol']['generated_kind'] == 'image folder'


def run_main(tool, argv, capsys):
    from posedreamer_mm.apis.errors import run_tool
    with pytest.raises(SystemExit) as exit_info:
        run_tool(lambda: tool.main(argv))
    assert exit_info.value.code == 1
    return capsys.readouterr().err


def test_user_errors_end_with_one_line(sets, tmp_path, capsys):
    tool = load_tool()
    err = run_main(tool, [str(sets['data']), '--ref', str(tmp_path / 'nope')], capsys)
    assert err.startswith('error: ImageSetError: ') and 'nope: no such directory' in err
    (tmp_path / 'empty').mkdir()
    err = run_main(tool, [str(sets['data']), '--ref', str(tmp_path / 'empty')], capsys)
    assert 'empty: no images' in err and err.count('\n') == 1
    err = run_main(tool, [str(sets['same']), '--ref', str(sets['same']), '--kept', str(tmp_path / 'k.jsonl')], capsys)
    assert 'only a generated dataset has filter rows' in err
    fake = tmp_path / 'default_1.pt'
    fake.write_bytes(b'not the network')
    err = run_main(tool, [str(sets['same']), '--ref', str(sets['same']), '--inception', str(fake)], capsys)
    assert err.startswith('error: InceptionWeightsError: ') and f'{fake}: sha256' in err
    err = run_main(tool, [str(sets['same']), '--ref', str(sets['same']), '--is-weights', str(tmp_path / 'x.pt')],
                   capsys)
    assert 'x.pt: no such file' in err and 'logits' in err
