import numpy as np
import pytest

from assets.skeletons import get_skeleton
from evaluation.metrics import (absolute_mpjpe, auc, consistency_error, cps, joint_errors, mpjpe, pa_mpjpe,
                                pck, pck_curve, per_joint_mean_errors, root_positions)


def _rotation_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


@pytest.fixture
def gt():
    # root at the origin, three joints along the axes, at 4 m depth
    pose = np.array([[0, 0, 0], [100, 0, 0], [0, 200, 0], [0, 0, 300.0]]) + [0, 0, 4000]
    return pose[None]


def test_mpjpe_subtracts_the_root(gt):
    pred = gt + [50, -20, 10]  # a pure translation is invisible after root alignment
    assert mpjpe(pred, gt, root_index=0) == pytest.approx([0.0])
    pred = gt.copy()
    pred[0, 1] += [30, 40, 0]  # one joint 50 mm off: mean over 4 joints (root error is 0)
    assert mpjpe(pred, gt, root_index=0) == pytest.approx([12.5])
    assert absolute_mpjpe(gt + [0, 0, 100], gt) == pytest.approx([100.0])


def test_pa_mpjpe_removes_rotation_translation_and_scale(gt):
    centre = gt.mean(axis=1, keepdims=True)
    pred = 1.7 * (gt - centre) @ _rotation_z(0.8).T + centre + [300, 0, -50]
    assert pa_mpjpe(pred, gt) == pytest.approx([0.0], abs=1e-9)
    assert mpjpe(pred, gt, root_index=0)[0] > 50


def test_pa_mpjpe_does_not_undo_a_reflection(gt):
    centre = gt.mean(axis=1, keepdims=True)
    mirrored = (gt - centre) * [-1, 1, 1] + centre
    # the four joints are not coplanar, so no rotation + scale maps their mirror image onto them;
    # an alignment that allowed reflections would give 0 here
    error = pa_mpjpe(mirrored, gt)[0]
    assert error > 20
    # whereas the same configuration without the reflection would be exact
    assert pa_mpjpe(gt.copy(), gt) == pytest.approx([0.0], abs=1e-9)


def test_nan_ground_truth_joints_are_ignored(gt):
    pred = gt.copy()
    pred[0, 3] += [0, 0, 1000]
    gt_missing = gt.copy()
    gt_missing[0, 3] = np.nan
    assert mpjpe(pred, gt_missing, root_index=0) == pytest.approx([0.0])
    assert pa_mpjpe(pred, gt_missing) == pytest.approx([0.0], abs=1e-9)
    assert pck(pred, gt_missing, threshold=50) == pytest.approx([100.0])
    assert np.isnan(joint_errors(pred, gt_missing, root_index=0)[0, 3])
    nothing = np.full_like(gt, np.nan)
    assert np.isnan(mpjpe(pred, nothing, root_index=0)[0])


def test_pck_auc_and_cps_by_hand(gt):
    pred = gt.copy()
    pred[0, 1] += [60, 0, 0]   # 60 mm
    pred[0, 2] += [0, 120, 0]  # 120 mm
    # root-relative errors: 0, 60, 120, 0
    assert pck(pred, gt, threshold=50) == pytest.approx([50.0])
    assert pck(pred, gt, threshold=100) == pytest.approx([75.0])
    assert pck(pred, gt, threshold=150) == pytest.approx([100.0])
    # classic AUC over thresholds 0,5,...,150: per threshold t the share of joints with error < t
    thresholds = np.linspace(0, 150, 31)
    expected = np.mean([(2 + (60 < t) + (120 < t)) / 4 * (t > 0) for t in thresholds]) * 100
    assert auc(pred, gt) == pytest.approx([expected])
    np.testing.assert_allclose(pck_curve(pred, gt, [50, 100, 150]), [50, 75, 100])
    assert cps(gt + 1.0, gt, threshold=100) == pytest.approx([100.0])
    far = gt.copy()
    far[0, 3] += [0, 1000, 0]  # after the best similarity fit, joint 2 is still ~139 mm off
    assert cps(far, gt, threshold=100) == pytest.approx([0.0])
    assert cps(far, gt, threshold=200) == pytest.approx([100.0])


def test_batched_per_example_and_per_joint(gt):
    preds = np.concatenate([gt, gt + [[0, 0, 0], [10, 0, 0], [0, 0, 0], [0, 0, 0]]])
    gts = np.concatenate([gt, gt])
    np.testing.assert_allclose(mpjpe(preds, gts, root_index=0), [0.0, 2.5])
    np.testing.assert_allclose(per_joint_mean_errors(preds, gts, root_index=0), [0, 5, 0, 0])


def test_consistency_is_the_distance_to_the_own_reconstruction(gt):
    assert consistency_error(gt, lambda p: p) == pytest.approx([0.0])
    assert consistency_error(gt, lambda p: p + [3, 4, 0]) == pytest.approx([5.0])


def test_shape_errors_and_nan_predictions_are_rejected(gt):
    with pytest.raises(ValueError, match="shape"):
        mpjpe(gt[:, :3], gt)
    with pytest.raises(ValueError, match="pred contains NaN"):
        mpjpe(np.full_like(gt, np.nan), gt)


def _random_poses(num_joints, n=6, seed=0):
    """gt poses about 4 m in front of the camera and predictions 0-80 mm off, float32 like the stores."""
    rng = np.random.default_rng(seed)
    gt = rng.normal(scale=300.0, size=(n, num_joints, 3)) + [0, 0, 4000]
    pred = gt + rng.normal(scale=40.0, size=gt.shape)
    return pred.astype(np.float32), gt.astype(np.float32)


def _by_hand_root_relative(pred, gt, root_joints):
    pred, gt = pred.astype(np.float64), gt.astype(np.float64)
    pred_root = pred[:, list(root_joints)].mean(axis=1, keepdims=True)
    gt_root = gt[:, list(root_joints)].mean(axis=1, keepdims=True)
    return np.linalg.norm((pred - pred_root) - (gt - gt_root), axis=-1)  # [N,J]


def test_an_int_root_and_a_one_joint_sequence_are_the_same_root():
    pred, gt = _random_poses(7)
    gt[1, 4] = np.nan
    for root in (3, (3,), [3], np.array([3])):
        np.testing.assert_allclose(mpjpe(pred, gt, root_index=root), mpjpe(pred, gt, root_index=3))
        np.testing.assert_allclose(pck(pred, gt, 50, root_index=root), pck(pred, gt, 50, root_index=3))
        np.testing.assert_allclose(auc(pred, gt, root_index=root), auc(pred, gt, root_index=3))
        np.testing.assert_allclose(pck_curve(pred, gt, [25, 75], root_index=root), pck_curve(pred, gt, [25, 75], 3))
        np.testing.assert_allclose(per_joint_mean_errors(pred, gt, root_index=root),
                                   per_joint_mean_errors(pred, gt, root_index=3))


def test_the_virtual_root_of_blazepose_is_the_hip_midpoint():
    skeleton = get_skeleton("blazepose_33")
    root = skeleton.root_joints
    pred, gt = _random_poses(skeleton.num_joints)
    by_hand = _by_hand_root_relative(pred, gt, root)
    scale = float(np.abs(gt).max())  # float32 poses: compare relative to their magnitude
    np.testing.assert_allclose(joint_errors(pred, gt, root_index=root), by_hand, atol=1e-6 * scale)
    np.testing.assert_allclose(mpjpe(pred, gt, root_index=root), by_hand.mean(axis=1), atol=1e-6 * scale)
    np.testing.assert_allclose(pck(pred, gt, 100, root_index=root), 100 * (by_hand < 100).mean(axis=1))
    np.testing.assert_allclose(root_positions(gt, root), gt[:, list(root)].mean(axis=1), atol=1e-6 * scale)
    # moving a predicted pose changes nothing root-relative, and the nose (joint 0) is not the root
    moved = pred + np.array([[[250.0, -80.0, 900.0]]] * len(pred), dtype=np.float32) * np.arange(len(pred))[:, None, None]
    np.testing.assert_allclose(mpjpe(moved, gt, root_index=root), mpjpe(pred, gt, root_index=root), atol=1e-5 * scale)
    assert not np.allclose(mpjpe(pred, gt, root_index=root), mpjpe(pred, gt, root_index=0))


def test_a_2d_format_without_pelvis_scores_against_its_hip_midpoint():
    skeleton = get_skeleton("coco_17")  # COCO keypoint names: nose, eyes, ears, ..., hips, knees, ankles
    root = skeleton.root_joints
    pred, gt = _random_poses(skeleton.num_joints, n=3, seed=1)
    gt[0, skeleton.index("nose")] = np.nan  # an unlabelled joint is left out
    gt[1, skeleton.index("rhip")] = np.nan  # without both hips there is no root: nothing to score
    by_hand = _by_hand_root_relative(pred, gt, root)
    errors = mpjpe(pred, gt, root_index=root)
    scale = float(np.abs(gt[np.isfinite(gt)]).max())
    assert errors[0] == pytest.approx(np.nanmean(by_hand[0]), abs=1e-6 * scale)
    assert np.isnan(errors[1]) and np.isnan(pck(pred, gt, root_index=root)[1])
    assert errors[2] == pytest.approx(by_hand[2].mean(), abs=1e-6 * scale)
    assert pa_mpjpe(pred, gt)[1] > 0  # Procrustes needs no root


@pytest.mark.parametrize("root, message", [
    (None, "need root_index"), ((), "non-empty sequence"), ((1.5, 2), "joint indices"), ("lhip", "joint indices"),
    (True, "joint indices"), ((2, 4), "joint 4 is outside 0..3"), (-1, "joint -1 is outside")])
def test_bad_roots_are_rejected(gt, root, message):
    with pytest.raises(ValueError, match=message):
        joint_errors(gt, gt, root_index=root)
