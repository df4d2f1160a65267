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


def _zero_outputs(head):
    with torch.no_grad():
        for layer in (head.dec_pose, head.dec_shape, head.dec_cam):
            layer.weight.zero_()
            layer.bias.zero_()
    return head


def test_the_initial_estimate_is_the_documented_upright_body_facing_the_camera(standin_body):
    """Documented: global_orient = Rx(pi) (upright, facing the camera), rest pose, mean shape, init_cam. With the
    output layers at zero the head returns exactly that; posed by the body model, that body stands head up in the
    OpenCV camera frame (y down), faces the camera (nose nearer than the head joint) and shows its left shoulder
    on the image's right, as a person facing a camera does."""
    head = _zero_outputs(_head(with_hands=True, with_face=True))
    out = head(torch.randn(2, 8, 4, 3), torch.randn(2, 3))
    rx_pi = torch.tensor([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    torch.testing.assert_close(out['global_orient'], rx_pi.expand(2, 1, 3, 3), atol=1e-6, rtol=0)
    for part in ('body_pose', 'left_hand_pose', 'right_hand_pose', 'jaw_pose'):
        torch.testing.assert_close(out[part], torch.eye(3).expand_as(out[part]), atol=1e-6, rtol=0)
    assert not out['betas'].any() and not out['expression'].any()
    torch.testing.assert_close(out['pred_cam'], torch.tensor([[0.9, 0.0, 0.0]]).expand(2, 3))
    from posedreamer_mm.body.rotations import matrix_to_axis_angle
    with torch.no_grad():
        j = standin_body(global_orient=matrix_to_axis_angle(out['global_orient'][:1, 0])).joints[0]
    names = dict(pelvis=0, head=15, left_shoulder=16, right_shoulder=17, nose=55)
    assert j[names['head'], 1] < j[names['pelvis'], 1] - 0.3  # head above the pelvis (y down)
    assert j[names['nose'], 2] < j[names['head'], 2]  # nose towards the camera
    assert j[names['left_shoulder'], 0] > j[names['right_shoulder'], 0]  # its left on the viewer's right


def test_a_face_heads_jaw_prediction_is_the_jaw_and_nothing_else():
    """The jaw is the last rotation slot of a face head: a change there must come out as ``jaw_pose`` only (not
    the expression, a body joint or a hand), and the expression outputs only as ``expression``."""
    head = _zero_outputs(_head(with_hands=True, with_face=True))
    feats, info = torch.randn(1, 8, 4, 3), torch.randn(1, 3)
    rest = head(feats, info)
    with torch.no_grad():
        head.dec_pose.bias[-6:] = torch.tensor([0.0, 0.6, 0.8, 0.3, 0.0, 0.0])  # the last slot's 6D
    out = head(feats, info)
    assert (out['jaw_pose'] - rest['jaw_pose']).abs().max() > 0.1
    for key in ('global_orient', 'body_pose', 'left_hand_pose', 'right_hand_pose', 'betas', 'expression'):
        torch.testing.assert_close(out[key], rest[key], atol=0, rtol=0, msg=key)
    with torch.no_grad():
        head.dec_pose.bias.zero_()
        head.dec_shape.bias[-10:] = 0.5  # the expression block after the betas
    out = head(feats, info)
    torch.testing.assert_close(out['expression'], torch.full((1, 10), 0.5))
    assert not out['betas'].any()
    torch.testing.assert_close(out['jaw_pose'], rest['jaw_pose'], atol=0, rtol=0)
