import pytest
import torch

from model.losses import (
    LossSettings,
    absolute_pose_loss,
    combined_loss,
    consistency_loss,
    label_validity,
    loss_2d_batch,
    loss_3d_batch,
    relative_pose_loss,
)
from model.reconstruction import project

S, STRIDE, BOX = 128, 16, 2200.0
SETTINGS = LossSettings(image_size=S, stride=STRIDE, box_size_mm=BOX, abs_start_step=100)
B, J = 4, 6


def intrinsics(batch: int = B) -> torch.Tensor:
    K = torch.tensor([[200.0, 0.0, (S - 1) / 2], [0.0, 200.0, (S - 1) / 2], [0.0, 0.0, 1.0]])
    return K.repeat(batch, 1, 1)


def labels(seed: int = 0) -> torch.Tensor:
    """Camera-frame poses 4 m away, small enough to stay inside the crop, one joint unlabelled per pose."""
    g = torch.Generator().manual_seed(seed)
    poses = torch.randn(B, J, 3, generator=g) * 300
    poses[..., 2] += 4000
    poses[torch.arange(B), torch.arange(B)] = float("nan")
    return poses


def test_perfect_predictions_give_zero_loss_and_finite_gradients_despite_nan_labels():
    gt = labels()
    pred = torch.nan_to_num(gt, nan=123.0).requires_grad_()  # anything at the unlabelled joints
    terms = loss_3d_batch(pred, gt, intrinsics(), settings=SETTINGS, step=1000)
    for name, value in terms.items():
        assert value.item() == pytest.approx(0.0, abs=1e-9), name
    terms["total"].backward()
    assert torch.isfinite(pred.grad).all()
    assert loss_2d_batch(pred, project(gt, intrinsics()), intrinsics(), settings=SETTINGS).item() == pytest.approx(0, abs=1e-9)


def test_unlabelled_and_masked_joints_do_not_contribute():
    gt = labels()
    pred = torch.nan_to_num(gt, nan=0.0) + 10.0
    reference = loss_3d_batch(pred, gt, intrinsics(), settings=SETTINGS, step=1000)
    changed = pred.clone()
    changed[torch.arange(B), torch.arange(B)] += 5000.0  # the unlabelled joints
    changed[:, 5] -= 700.0  # joints masked by joint_valid below
    mask = torch.ones(B, J, dtype=torch.bool)
    mask[:, 5] = False
    masked_reference = loss_3d_batch(pred, gt, intrinsics(), settings=SETTINGS, step=1000, joint_valid=mask)
    masked_changed = loss_3d_batch(changed, gt, intrinsics(), settings=SETTINGS, step=1000, joint_valid=mask)
    for name in reference:
        assert torch.isfinite(reference[name])
        torch.testing.assert_close(masked_changed[name], masked_reference[name])


def test_a_batch_without_any_label_gives_zero_not_nan():
    gt = torch.full((B, J, 3), float("nan"))
    pred = torch.randn(B, J, 3, requires_grad=True)
    terms = loss_3d_batch(pred, gt, intrinsics(), settings=SETTINGS, step=1000)
    assert terms["total"].item() == 0.0
    terms["total"].backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_relative_loss_ignores_translation_and_is_in_metres():
    gt = labels()
    valid = label_validity(gt)
    clean = torch.nan_to_num(gt)
    assert relative_pose_loss(clean + torch.tensor([500.0, -20.0, 900.0]), gt, valid).item() == pytest.approx(0, abs=1e-7)
    pred = clean.clone()
    pred[..., 0] += torch.where(torch.arange(J) % 2 == 0, 30.0, -30.0)  # ±30 mm in x, centre unchanged
    pred[:, -1, 0] = clean[:, -1, 0]
    expected_centre_shift = (pred - clean)[..., 0].mul(valid).sum(1, keepdim=True) / valid.sum(1, keepdim=True)
    per_joint_x = ((pred - clean)[..., 0] - expected_centre_shift).abs()
    expected = (per_joint_x * valid).sum() / valid.sum() / 3 / 1000  # mean over x, y, z, in metres
    assert relative_pose_loss(pred, gt, valid).item() == pytest.approx(expected.item(), rel=1e-5)


def test_absolute_loss_formula_near_far_and_too_close_joints():
    gt = torch.tensor([[[0.0, 0.0, 5000.0], [0.0, 0.0, 20000.0], [0.0, 0.0, 200.0]]])
    pred = gt + torch.tensor([60.0, 30.0, 90.0])
    valid = torch.ones(1, 3, dtype=torch.bool)
    near = (60 + 30 + 90) / 3
    far = (60 + 30 + 90 * 10000 / 20000) / 3  # depth errors count less beyond 10 m
    # the joint 20 cm from the camera is ignored
    assert absolute_pose_loss(pred, gt, valid).item() == pytest.approx((near + far) / 2 / 1000)


def test_absolute_term_is_switched_on_by_the_step_count():
    gt = labels()
    pred = torch.nan_to_num(gt) + torch.tensor([0.0, 0.0, 250.0])  # translation only: rel is 0
    early = loss_3d_batch(pred, gt, intrinsics(), settings=SETTINGS, step=99)
    late = loss_3d_batch(pred, gt, intrinsics(), settings=SETTINGS, step=100)
    assert early["rel"].item() == pytest.approx(0, abs=1e-7)
    assert early["abs"].item() > 0
    torch.testing.assert_close(early["total"], early["rel"] + early["proj"])
    torch.testing.assert_close(late["total"], late["rel"] + late["proj"] + 0.1 * late["abs"])


def test_projection_loss_scales_pixels_to_metres_in_the_box():
    gt = labels()
    K = intrinsics()
    pred = torch.nan_to_num(gt).clone()
    pred[..., 0] += 8.0 * pred[..., 2] / K[0, 0, 0]  # moves every projection 8 px right
    terms = loss_3d_batch(pred, gt, K, settings=SETTINGS, step=0)
    # mean over (u, v) of (8, 0) px, times B / S mm per pixel, in metres
    assert terms["proj"].item() == pytest.approx(4.0 * BOX / S / 1000, rel=1e-4)


def test_projection_loss_ignores_predictions_outside_the_crop_and_labels_far_outside():
    K = intrinsics(1)
    gt = torch.tensor([[[0.0, 0.0, 4000.0], [0.0, 0.0, 4000.0], [30000.0, 0.0, 4000.0]]])
    pred = gt.clone()
    pred[0, 0, 0] += 40.0  # 2 px off, inside the crop: counted
    pred[0, 1, 0] = 1300.0  # projects 65 px right of centre, outside the field of view: ignored
    pred[0, 2, 0] = 100.0  # its label projects 1500 px away, beyond 20 strides: ignored
    proj = loss_3d_batch(pred, gt, K, settings=SETTINGS, step=0)["proj"]
    assert proj.item() == pytest.approx(1.0 * BOX / S / 1000, rel=1e-4)


def test_2d_batch_loss_masks_invalid_labels():
    K = intrinsics()
    pred = torch.nan_to_num(labels())
    target = project(pred, K) + torch.tensor([0.0, 6.0])
    target[0, 0] = float("nan")
    mask = torch.ones(B, J, dtype=torch.bool)
    mask[1, 2] = False
    target[1, 2] += 50.0  # masked: would change the loss if counted
    loss = loss_2d_batch(pred.requires_grad_(), target, K, settings=SETTINGS, joint_valid=mask)
    assert loss.item() == pytest.approx(3.0 * BOX / S / 1000, rel=1e-4)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


def test_combined_loss_weights_the_2d_batch():
    assert combined_loss(torch.tensor(1.0), torch.tensor(2.0), SETTINGS).item() == pytest.approx(1.4)


def test_settings_from_a_model_config():
    class Config:
        image_size, stride, box_size_mm = 256, 32, 2500.0

    settings = LossSettings.from_config(Config(), abs_start_step=10)
    assert (settings.image_size, settings.stride, settings.box_size_mm, settings.abs_start_step) == (256, 32, 2500.0, 10)
    assert settings.metres_per_pixel == pytest.approx(2500 / 256 / 1000)
    assert settings.abs_weight_at(9) == 0.0 and settings.abs_weight_at(10) == 0.1


def test_consistency_loss_measures_the_autoencoder_residual():
    poses = torch.randn(2, 5, J, 3, requires_grad=True)
    assert consistency_loss(poses, lambda p: p).item() == 0.0
    loss = consistency_loss(poses, lambda p: p.mean(dim=-2, keepdim=True).expand_as(p))
    expected = (poses - poses.mean(dim=-2, keepdim=True)).abs().mean() / 1000
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert poses.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="acae_reconstruction_fn: returned shape"):
        consistency_loss(poses, lambda p: p[..., :3, :])


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match=r"gt_mm: expected shape \[4, 6, 3\]"):
        loss_3d_batch(torch.zeros(B, J, 3), torch.zeros(B, J - 1, 3), intrinsics(), settings=SETTINGS, step=0)
    with pytest.raises(ValueError, match=r"gt2d_px: expected shape \[4, 6, 2\]"):
        loss_2d_batch(torch.zeros(B, J, 3), torch.zeros(B, J, 3), intrinsics(), settings=SETTINGS)
    with pytest.raises(ValueError, match=r"joint_valid: expected shape \(4, 6\)"):
        loss_3d_batch(torch.zeros(B, J, 3), labels(), intrinsics(), settings=SETTINGS, step=0, joint_valid=torch.ones(B, dtype=torch.bool))
