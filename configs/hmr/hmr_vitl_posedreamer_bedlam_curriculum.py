# The PoseDreamer + BEDLAM ViT-L recipe (hmr_vitl_posedreamer_bedlam.py) with the hard-sample curriculum: the
# HardSampleSampler draws training samples by their measured difficulty, the DifficultyHook measures it (each
# sample's body MPJPE, an EMA over the visits). docs/mining.md ("The in-training level"): the formula, the hook, the figures.
#   python tools/train.py configs/hmr/hmr_vitl_posedreamer_bedlam_curriculum.py
# Start from the difficulty regressor's predictions (tools/mine_hard.py; ids -> difficulty, higher = harder):
#   --cfg-options difficulty_file=work_dirs/mining/train_difficulty.npz
_base_ = ['./hmr_vitl_posedreamer_bedlam.py']

difficulty_file = None  # uniform until the hook has measured a sample

# Uniform for the first 5k iterations, then the difficulty-focused share ramps to half the draws by 50k:
# p_i = (1 - m) / N + m * d_i / sum(d), m = 0.5 * clip((iter - 5000) / 45000, 0, 1).
train_dataloader = dict(sampler=dict(
    type='HardSampleSampler', infinite=True,
    curriculum=dict(by='iter', begin=5000, end=50000, max_mix=0.5, power=1.0),
    difficulty_file=difficulty_file))
custom_hooks = [dict(type='DifficultyHook', interval=1000, momentum=0.5)]
