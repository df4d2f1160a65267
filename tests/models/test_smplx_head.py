"""SMPLXTransformerHead's optional position embedding of its memory: why it exists and how it resizes."""
import pytest
import torch

from posedreamer_mm.models import SMPLXTransformerHead


def _head(**kwargs):
    torch.manual_seed(0)
    head = SMPLXTransformerHead(in_channels=8, embed_dims=16, num_layers=1, num_heads=2, feedforward_channels=32,
                                **kwargs)
    head.init_weights()
    # The output layers start near zero (gain 0.01); scale them up so differences are far above float noise.
    for layer in (head.dec_pose, head.dec_shape, head.dec_cam):
        torch.nn.init.normal_(layer.weight, std=0.5)
    return head.eval()


def _shuffled(feats):
    b, c, h, w = feats.shape
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(1))
    return feats.flatten(2)[:, :, perm].reshape(b, c, h, w)


def test_without_positions_the_head_cannot_tell_where_a_token_is():
    feats, info = torch.randn(2, 8, 4, 3), torch.randn(2, 3)
    head = _head()
    a, b = head(feats, info), head(_shuffled(feats), info)
    torch.testing.assert_close(a['pose_6d'], b['pose_6d'], rtol=1e-5, atol=1e-5)  # permutation invariant
    head = _head(pos_embed_size=(4, 3))
    a, b = head(feats, info), head(_shuffled(feats), info)
    assert (a['pose_6d'] - b['pose_6d']).abs().max() > 1e-2  # the layout now changes the prediction


def test_position_embedding_is_learned_resized_and_checked():
    head = _head(pos_embed_size=(4, 3))
    assert 'memory_pos' in head.state_dict() and tuple(head.memory_pos.shape) == (1, 16, 4, 3)
    assert 0.3 < head.memory_pos.std().item() < 0.7
    head.train()
    out = head(torch.randn(2, 8, 4, 3), torch.randn(2, 3))
    out['pose_6d'].sum().backward()
    assert head.memory_pos.grad is not None and head.memory_pos.grad.abs().sum() > 0
    # Another grid (another input size): the embedding is resized bilinearly; tokens of its own grid work too.
    assert head(torch.randn(2, 8, 8, 6), torch.randn(2, 3))['pose_6d'].shape == (2, 22, 6)
    tokens = torch.randn(2, 8, 4, 3)
    torch.testing.assert_close(head(tokens.flatten(2).transpose(1, 2), torch.zeros(2, 3))['pose_6d'],
                               head(tokens, torch.zeros(2, 3))['pose_6d'])
    with pytest.raises(ValueError, match=r'5 tokens do not fill the position grid \(4, 3\)'):
        head(torch.randn(2, 5, 8), torch.randn(2, 3))
    with pytest.raises(ValueError, match='pos_embed_size'):
        SMPLXTransformerHead(in_channels=8, embed_dims=16, pos_embed_size=(0, 3))
