"""HMR models: ViT backbone + SMPL-X head, losses, data preprocessing."""
