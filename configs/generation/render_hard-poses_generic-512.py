# The next generation round of hard-sample mining (docs/mining.md): the poses tools/mine_hard.py selected, with
# everything else (controls, crop, prompts, backend, writer) the base's. The one change is the source:
#   python tools/mine_hard.py data/generated/render_procedural_generic-512 --out data/mining/round1 \
#       --pool configs/generation/render_procedural_generic-512.py --cfg-options seed=1 --num 1000
#   python tools/generate.py configs/generation/render_hard-poses_generic-512.py \
#       --cfg-options hard_pose_list=data/mining/round1/hard_poses.npz
# Each selected pose keeps what the regressor judged hard (body pose, heading, shape); each of `repeats` views
# draws a new camera distance and offset (and the generator a new seed).
_base_ = ['./render_procedural_generic-512.py']

hard_pose_list = 'data/mining/round1/hard_poses.npz'
out_dir = 'data/generated/render_hard-poses_generic-512'
num_samples = None  # the whole list x repeats
seed = 0

generator = dict(
    # _delete_: the base's procedural source and its augmentation settings do not apply to a pose list.
    source=dict(
        _delete_=True,
        type='AugmentedSource',
        source=dict(type='PoseListSource', file=hard_pose_list),
        repeats=2, seed=seed, betas_range=None, yaw_range=None, distance_range=(2.5, 6.0), offset_range=(0.2, 0.2),
        focal=890.0, img_size=(1024, 1024)),
    num_samples=num_samples,
)
