import numpy as np
import pytest
import torch

from assets.cameras import Camera
from model.reconstruction import (
    OUT_OF_FOV_WEIGHT,
    check_intrinsics,
    flip_intrinsics,
    fov_bounds,
    image_to_normalized,
    is_within_fov,
    mirror_pose_2d,
    mirror_pose_3d,
    project,
    reconstruct_absolute,
)

S, STRIDE, J = 128, 16, 17


def crop_intrinsics(depth_mm: torch.Tensor, skew: float = 0.0) -> torch.Tensor:
    """Per-example virtual crop cameras whose 2.2 m box at the person's depth spans the crop."""
    focal = S * depth_mm / 2200
    K = torch.zeros(len(depth_mm), 3, 3, dtype=depth_mm.dtype)
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal * 1.05  # non-square pixels, so x and y are not interchangeable in the tests
    K[:, 0, 1] = skew
    K[:, 0, 2] = (S - 1) / 2
    K[:, 1, 2] = (S - 1) / 2 + 3
    K[:, 2, 2] = 1
    return K


def scene(batch: int = 8, seed: int = 0, depth=(2000.0, 8000.0)):
    """Absolute poses near the optical axis (as in the store's crops), their exact projections, and their
    offsets from an arbitrary reference point per example."""
    g = torch.Generator().manual_seed(seed)
    body = torch.randn(batch, J, 3, generator=g, dtype=torch.float64) * torch.tensor([250.0, 450.0, 150.0], dtype=torch.float64)
    root = torch.stack(
        [
            torch.empty(batch, dtype=torch.float64).uniform_(-150, 150, generator=g),
            torch.empty(batch, dtype=torch.float64).uniform_(-150, 150, generator=g),
            torch.empty(batch, dtype=torch.float64).uniform_(*depth, generator=g),
        ],
        dim=1,
    )
    absolute = body + root[:, None]
    K = crop_intrinsics(root[:, 2], skew=0.7)
    reference = root + torch.randn(batch, 3, generator=g, dtype=torch.float64) * 400
    return absolute, project(absolute, K), absolute - reference[:, None], K


def test_projection_and_normalisation_match_the_camera_model():
    absolute, uv, _, K = scene(batch=3)
    for i in range(3):
        camera = Camera(K=K[i].numpy())
        np.testing.assert_allclose(uv[i].numpy(), camera.camera_to_image(absolute[i].numpy()), atol=1e-9)
        np.testing.assert_allclose(
            image_to_normalized(uv, K)[i].numpy(), camera.image_to_normalized(uv[i].numpy()), atol=1e-12
        )


@pytest.mark.parametrize("mix", [0.0, 0.5, 1.0])
def test_exact_inputs_give_the_exact_absolute_pose(mix):
    absolute, uv, rel, K = scene()
    result = reconstruct_absolute(uv, rel, K, mix_3d_inside_fov=mix, regularization=0.0)
    torch.testing.assert_close(result, absolute, atol=1e-6, rtol=1e-9)  # mm of ~1e3-1e4: float64 rounding scales


def test_default_regularisation_only_slightly_shrinks_the_solution():
    absolute, uv, rel, K = scene(batch=32)
    error = (reconstruct_absolute(uv, rel, K) - absolute).norm(dim=-1)
    assert error.max() < 1e-3 * absolute[..., 2].max()


def test_float32_inputs_are_accurate_to_a_fraction_of_a_millimetre():
    absolute, uv, rel, K = scene()
    result = reconstruct_absolute(uv.float(), rel.float(), K.float(), regularization=0.0)
    assert result.dtype == torch.float32
    assert (result.double() - absolute).norm(dim=-1).max() < 0.5


def test_reference_point_is_any_offset():
    absolute, uv, rel, K = scene()
    shifted = rel + torch.tensor([5000.0, -3000.0, 10000.0], dtype=torch.float64)
    result = reconstruct_absolute(uv, shifted, K, regularization=0.0)
    torch.testing.assert_close(result, absolute, atol=1e-6, rtol=1e-9)  # mm of ~1e3-1e4: float64 rounding scales


def test_examples_are_solved_independently():
    absolute, uv, rel, K = scene(batch=6)
    together = reconstruct_absolute(uv, rel, K)
    alone = torch.cat([reconstruct_absolute(uv[i : i + 1], rel[i : i + 1], K[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, atol=1e-9, rtol=1e-10)  # batched BLAS may sum in another order


def test_out_of_fov_joints_barely_move_the_solution_and_keep_their_3d_estimate():
    absolute, uv, rel, K = scene()
    corrupted = uv.clone()
    outside = torch.zeros(uv.shape[:2], dtype=torch.bool)
    outside[:, :4] = True
    corrupted[:, :4] += 40.0  # truncated joints: the 2D head cannot follow them out of the crop

    trusting = reconstruct_absolute(corrupted, rel, K, regularization=0.0)
    result = reconstruct_absolute(corrupted, rel, K, is_in_fov=~outside, regularization=0.0)

    inside_error = (result - absolute).norm(dim=-1)[:, 4:]
    assert inside_error.max() < 0.1  # the 1e-4 weight leaves the reference point essentially exact
    assert (trusting - absolute).norm(dim=-1)[:, 4:].min() > 10 * inside_error.max()
    # out-of-view joints come from the 3D offsets, not from back-projecting the wrong 2D positions
    assert (result - absolute).norm(dim=-1)[:, :4].max() < 0.1
    assert OUT_OF_FOV_WEIGHT == 1e-4


def test_in_fov_joints_mix_3d_and_2d_estimates_per_example():
    absolute, uv, rel, K = scene(batch=2)
    shifted_uv = uv + torch.tensor([3.0, -2.0], dtype=torch.float64)  # 2D and 3D now disagree
    in_fov = torch.ones(uv.shape[:2], dtype=torch.bool)
    in_fov[:, 0] = False
    only_3d = reconstruct_absolute(shifted_uv, rel, K, is_in_fov=in_fov, mix_3d_inside_fov=1.0)
    only_2d = reconstruct_absolute(shifted_uv, rel, K, is_in_fov=in_fov, mix_3d_inside_fov=0.0)
    mixed = reconstruct_absolute(shifted_uv, rel, K, is_in_fov=in_fov, mix_3d_inside_fov=torch.tensor([0.25, 0.75], dtype=torch.float64))

    # mix 1: the 3D offsets moved rigidly by the reference point
    torch.testing.assert_close(only_3d - only_3d[:, :1], rel - rel[:, :1])
    # mix 0: in-view joints lie on the rays of their 2D predictions, at the 3D-based depth
    torch.testing.assert_close(project(only_2d, K)[:, 1:], shifted_uv[:, 1:])
    torch.testing.assert_close(only_2d[..., 2], only_3d[..., 2])
    for i, mix in enumerate([0.25, 0.75]):
        torch.testing.assert_close(mixed[i, 1:], mix * only_3d[i, 1:] + (1 - mix) * only_2d[i, 1:])
    torch.testing.assert_close(mixed[:, 0], only_3d[:, 0])  # out of view: 3D-based whatever the mix


def test_weak_perspective_is_exact_for_a_fronto_parallel_pose_and_close_otherwise():
    absolute, _, _, K = scene()
    flat = absolute.clone()
    flat[..., 2] = absolute[..., 2].mean(dim=1, keepdim=True)
    offset = torch.tensor([100.0, -200.0, 300.0], dtype=torch.float64)
    result = reconstruct_absolute(project(flat, K), flat - offset, K, weak_perspective=True)
    torch.testing.assert_close(result, flat, atol=1e-6, rtol=1e-9)

    _, uv, rel, _ = scene()
    approximate = reconstruct_absolute(uv, rel, K, weak_perspective=True, mix_3d_inside_fov=1.0)
    relative_depth_error = (approximate[..., 2] - absolute[..., 2]).abs() / absolute[..., 2]
    assert relative_depth_error.max() < 0.1


@pytest.mark.parametrize("weak_perspective", [False, True])
def test_degenerate_inputs_give_finite_values_and_gradients(weak_perspective):
    uv = torch.full((2, J, 2), (S - 1) / 2, requires_grad=True)  # every joint on the principal point
    rel = torch.zeros(2, J, 3, requires_grad=True)
    K = crop_intrinsics(torch.full((2,), 4000.0))
    K[:, 1, 2] = (S - 1) / 2
    result = reconstruct_absolute(uv, rel, K, is_in_fov=torch.zeros(2, J, dtype=torch.bool), weak_perspective=weak_perspective)
    result.sum().backward()
    assert torch.isfinite(result).all()
    assert torch.isfinite(uv.grad).all() and torch.isfinite(rel.grad).all()


def test_gradients_reach_both_heads():
    _, uv, rel, K = scene(batch=2)
    uv = uv.float().requires_grad_()
    rel = rel.float().requires_grad_()
    reconstruct_absolute(uv, rel, K.float(), mix_3d_inside_fov=0.5).square().mean().backward()
    assert uv.grad.abs().sum() > 0 and rel.grad.abs().sum() > 0


def test_fov_bounds_are_symmetric_about_the_crop_centre():
    lower, upper = fov_bounds(S, STRIDE)
    assert (lower, upper) == (-0.5 + 0.75 * STRIDE, S - 0.5 - 0.75 * STRIDE)
    assert lower + upper == S - 1
    points = torch.tensor([[[lower, 60.0], [upper, 60.0], [lower - 0.01, 60.0], [60.0, upper + 0.01]]])
    assert is_within_fov(points, S, STRIDE).tolist() == [[True, True, False, False]]
    assert is_within_fov(points * 0 - 300, S, STRIDE, border_factor=-20).all()


def test_flipped_intrinsics_image_the_mirrored_scene_in_the_flipped_crop():
    absolute, uv, rel, K = scene(batch=3)
    permutation = torch.arange(J).flip(0)
    K_flipped = flip_intrinsics(K, S)
    mirrored = mirror_pose_3d(absolute, permutation)
    torch.testing.assert_close(project(mirrored, K_flipped), mirror_pose_2d(uv, S, permutation))
    # and reconstruction commutes with mirroring
    direct = reconstruct_absolute(uv, rel, K, mix_3d_inside_fov=0.3)
    via_mirror = reconstruct_absolute(
        mirror_pose_2d(uv, S, permutation), mirror_pose_3d(rel, permutation), K_flipped, mix_3d_inside_fov=0.3
    )
    torch.testing.assert_close(mirror_pose_3d(via_mirror, permutation), direct)


def test_bad_shapes_are_named():
    _, uv, rel, K = scene(batch=2)
    with pytest.raises(ValueError, match=r"coords2d_px: expected a tensor of shape \[B, J, 2\]"):
        reconstruct_absolute(uv[..., :1], rel, K)
    with pytest.raises(ValueError, match="coords3d_rel_mm: expected shape"):
        reconstruct_absolute(uv, rel[:, :5], K)
    with pytest.raises(ValueError, match=r"intrinsics: expected shape \[2, 3, 3\]"):
        reconstruct_absolute(uv, rel, K[:1])
    with pytest.raises(ValueError, match="is_in_fov: expected shape"):
        reconstruct_absolute(uv, rel, K, is_in_fov=torch.ones(2, 3, dtype=torch.bool))


def test_check_intrinsics_rejects_non_finite_and_malformed_matrices():
    K = crop_intrinsics(torch.full((3,), 3000.0))
    check_intrinsics(K, 3)
    bad = K.clone()
    bad[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match=r"intrinsics: expected finite camera matrices.*examples \[1\]"):
        check_intrinsics(bad, 3)
    bad = K.clone()
    bad[2, 2, 2] = 2.0
    with pytest.raises(ValueError, match=r"intrinsics: expected \[\[fx, s, cx\].*examples \[2\]"):
        check_intrinsics(bad)
    with pytest.raises(ValueError, match=r"intrinsics: expected shape \[4, 3, 3\], got \(3, 3, 3\)"):
        check_intrinsics(K, 4)
