import numpy as np
import pytest

from assets.cameras import Camera, CameraRig
from assets.triangulation import estimate_frame_offsets, triangulate

IMAGE_SIZE = (1088, 1920)
LENS = [-0.08, 0.12, 0.0015, -0.001, 0.02]


def _look_at(position, target, dist, name) -> Camera:
    forward = np.asarray(target, float) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(forward, right), forward])
    return Camera(K=[[1680, 0, 540], [0, 1675, 962], [0, 0, 1]], dist=dist, R=R, t=-R @ position, name=name)


def _ring(num_cameras=4, dist=LENS):
    angles = np.radians(np.linspace(20, 380, num_cameras, endpoint=False))
    return [_look_at(np.array([3500 * np.cos(a), 3500 * np.sin(a), 1800.0]), [0, 0, 1000], dist, f"cam{i + 1:02d}")
            for i, a in enumerate(angles)]


@pytest.fixture
def cameras():
    return _ring()


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    return rng.uniform([-700, -700, 50], [700, 700, 1800], size=(200, 17, 3))


def _detections(cameras, points, rng, noise=0.0, outlier_fraction=0.0):
    uv = CameraRig(cameras).world_to_image(points)
    uv = uv + rng.normal(0, noise, uv.shape) if noise else uv
    outlier = rng.random(uv.shape[:-1]) < outlier_fraction
    angle = rng.uniform(0, 2 * np.pi, uv.shape[:-1])
    offset = np.stack([np.cos(angle), np.sin(angle)], -1) * rng.uniform(60, 300, uv.shape[:-1])[..., None]
    return np.where(outlier[..., None], uv + offset, uv), np.ones(uv.shape[:-1]), outlier


# -- cameras ---------------------------------------------------------------------------------------------

def test_rig_matches_each_camera_and_round_trips(cameras, scene):
    rig = CameraRig(cameras)
    uv = rig.world_to_image(scene)
    assert uv.shape == (4, *scene.shape[:-1], 2)
    for c, camera in enumerate(cameras):
        np.testing.assert_allclose(uv[c], camera.world_to_image(scene), atol=1e-9)
    # undistortion inverts the distortion: normalised coordinates come back as x/z, y/z
    camera_points = rig.world_to_camera(scene)
    np.testing.assert_allclose(rig.image_to_normalized(uv), camera_points[..., :2] / camera_points[..., 2:], atol=1e-9)
    # the projection matrices describe the lens-free cameras
    homogeneous = np.concatenate([scene, np.ones(scene.shape[:-1] + (1,))], -1)
    projected = np.einsum("cij,...j->c...i", rig.projection_matrices, homogeneous)
    np.testing.assert_allclose(projected[..., :2] / projected[..., 2:], rig.undistort_points(uv), atol=1e-6)
    np.testing.assert_allclose(rig.centers, [c.center for c in cameras])


def test_projection_jacobian_matches_finite_differences(cameras, scene):
    rig = CameraRig(cameras)
    points = scene[:5, :3]
    _, jacobian, depth = rig.world_to_image_jacobian(points)
    step = 1e-3
    numeric = np.stack([(rig.world_to_image(points + step * e) - rig.world_to_image(points - step * e)) / (2 * step)
                        for e in np.eye(3)], axis=-1)
    np.testing.assert_allclose(jacobian, numeric, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(depth, rig.world_to_camera(points)[..., 2])


def test_camera_errors_name_the_camera(cameras):
    with pytest.raises(ValueError, match="'cam07' field 'K'"):
        Camera(K=np.full((3, 3), np.nan), name="cam07")
    cameras[2].t[1] = np.inf  # arrays of a frozen Camera are still writable
    with pytest.raises(ValueError, match=r"camera 2 \(cam03\) field 't'.*non-finite"):
        CameraRig(cameras)


# -- triangulation -------------------------------------------------------------------------------------

@pytest.mark.parametrize("refine_iterations", [0, 2])
def test_exact_on_noise_free_detections(cameras, scene, refine_iterations):
    uv, confidence, _ = _detections(cameras, scene, np.random.default_rng(1))
    points, error, inliers = triangulate(uv, confidence, cameras, refine_iterations=refine_iterations)
    assert points.shape == scene.shape and error.shape == scene.shape[:-1] and inliers.shape == uv.shape[:-1]
    np.testing.assert_allclose(points, scene, atol=1e-5)
    assert np.all(error < 1e-5) and inliers.all()


def test_linear_solution_is_the_homogeneous_least_squares_solution(cameras, scene):
    from assets.triangulation import _Solver

    solver = _Solver(CameraRig(cameras), np.full(4, 20.0), min_views=2, robust=True, refine_iterations=0)
    uv, _, _ = _detections(cameras, scene.reshape(-1, 3), np.random.default_rng(10), noise=3.0)
    xy = CameraRig(cameras).image_to_normalized(uv)  # [C, P, 2]
    # the DLT equations (x P3 - P1, y P3 - P2) of all views, stacked per point: [P, 2C, 4]
    rows = xy[..., :, None] * solver.projections[:, None, 2:3, :] - solver.projections[:, None, :2, :]
    rows = rows.transpose(1, 0, 2, 3).reshape(uv.shape[1], -1, 4)
    _, _, vt = np.linalg.svd(rows)
    expected = vt[:, -1, :3] / vt[:, -1, 3:] * solver.scale + solver.origin
    np.testing.assert_allclose(solver._solve(rows.transpose(0, 2, 1) @ rows), expected, rtol=0, atol=1e-6)
    assert np.abs(expected - scene.reshape(-1, 3)).max() > 1.0  # noisy: the solution is not simply the truth


def test_two_cameras_triangulate_and_drop_disagreement(scene):
    cameras = _ring(4)[:2]  # 90 degrees apart
    uv, confidence, _ = _detections(cameras, scene, np.random.default_rng(2))
    uv[1, 0, 0] += [200.0, -150.0]  # the two views no longer meet: nothing to outvote the wrong one
    points, error, inliers = triangulate(uv, confidence, cameras)
    assert np.isnan(points[0, 0]).all() and np.isnan(error[0, 0]) and not inliers[:, 0, 0].any()
    np.testing.assert_allclose(points[1:], scene[1:], atol=1e-5)


@pytest.mark.parametrize("outlier_fraction, max_outlier_share, min_kept", [(0.1, 0.005, 0.99), (0.3, 0.03, 0.97)])
def test_robust_to_outlier_detections(cameras, scene, outlier_fraction, max_outlier_share, min_kept):
    rng = np.random.default_rng(3)
    uv, confidence, outlier = _detections(cameras, scene, rng, noise=1.0, outlier_fraction=outlier_fraction)
    result = triangulate(uv, confidence, cameras, threshold_px=12)
    error = np.linalg.norm(result.points3d - scene, axis=-1)
    found = np.isfinite(error)
    assert np.median(error[found]) < 5.0
    assert np.percentile(error[found], 90) < 20.0
    # points that at least three views see correctly are recovered
    assert found[(~outlier).sum(axis=0) >= 3].mean() > 0.99
    # the views kept are the correct detections: with many outliers, two wrong views can agree by chance
    inliers = result.inlier_views
    assert (inliers & outlier).sum() / inliers.sum() < max_outlier_share
    assert (inliers & ~outlier).sum() / (~outlier).sum() > min_kept
    # without consensus the same detections give far worse points
    plain = triangulate(uv, confidence, cameras, robust=False)
    assert np.percentile(np.linalg.norm(plain.points3d - scene, axis=-1), 90) > 50.0


def test_points_with_fewer_than_two_views_are_nan(cameras, scene):
    uv, confidence, _ = _detections(cameras, scene, np.random.default_rng(4))
    confidence[1:, 0, 0] = 0.0  # seen by one camera only
    uv[:, 0, 1] = np.nan  # seen by none
    confidence[2:, 0, 2] = 0.0  # seen by two: still triangulated
    points, error, inliers = triangulate(uv, confidence, cameras)
    assert np.isnan(points[0, :2]).all() and np.isnan(error[0, :2]).all() and not inliers[:, 0, :2].any()
    np.testing.assert_allclose(points[0, 2], scene[0, 2], atol=1e-5)
    assert inliers[:, 0, 2].tolist() == [True, True, False, False]


def test_refinement_lowers_the_reprojection_error(scene):
    cameras = _ring(4, [-0.3, 0.15, 0.004, -0.003, -0.03])  # a strong lens: the DLT works without it
    rng = np.random.default_rng(5)
    uv, _, _ = _detections(cameras, scene, rng, noise=4.0)
    confidence = rng.uniform(0.2, 1.0, uv.shape[:-1])
    rig = CameraRig(cameras)

    def weighted_squared_error(points):
        return (np.linalg.norm(rig.world_to_image(points) - uv, axis=-1) ** 2 * confidence).sum(axis=0)

    linear = triangulate(uv, confidence, cameras, refine_iterations=0)
    refined = triangulate(uv, confidence, cameras, refine_iterations=3)
    assert (refined.inlier_views == linear.inlier_views).all()
    before, after = weighted_squared_error(linear.points3d), weighted_squared_error(refined.points3d)
    assert after.sum() < before.sum()
    assert np.all(after <= before * (1 + 1e-12))  # a step that does not help is not taken


def test_refinement_converges_from_a_distant_start(cameras, scene):
    from assets.triangulation import _Solver

    uv, confidence, _ = _detections(cameras, scene, np.random.default_rng(8))
    solver = _Solver(CameraRig(cameras), np.full(4, 20.0), min_views=2, robust=True, refine_iterations=8)
    start = scene + np.random.default_rng(9).normal(0, 40, scene.shape)
    refined = solver._refine(start.reshape(-1, 3), uv.reshape(4, -1, 2), confidence.reshape(4, -1))
    np.testing.assert_allclose(refined.reshape(scene.shape), scene, atol=1e-3)


def test_estimate_frame_offsets_recovers_a_shifted_video(cameras):
    # a point cloud moving fast enough that a few frames of lag are visible
    frames = np.arange(60)
    rng = np.random.default_rng(6)
    offsets = rng.uniform(-300, 300, (1, 12, 3)) + [0, 0, 1000]
    trajectory = offsets + np.stack([400 * np.sin(frames / 6), 300 * np.cos(frames / 5), 100 * np.sin(frames / 4)],
                                    -1)[:, None]
    uv, confidence, _ = _detections(cameras, trajectory, rng, noise=0.5)
    true_offsets = [0, 0, 3, -2]  # camera c's video frame f + offset shows camera 0's frame f
    shifted = np.full_like(uv, np.nan)
    shifted_confidence = np.zeros_like(confidence)
    for c, offset in enumerate(true_offsets):
        src = np.arange(60)
        dst = src - offset
        keep = (dst >= 0) & (dst < 60)
        shifted[c, src[keep]] = uv[c, dst[keep]]
        shifted_confidence[c, src[keep]] = confidence[c, dst[keep]]
    estimated = estimate_frame_offsets(shifted, shifted_confidence, cameras, max_offset=5, threshold_px=20)
    assert estimated.tolist() == true_offsets


# -- bad input -------------------------------------------------------------------------------------------

def test_bad_input_is_named(cameras, scene):
    uv, confidence, _ = _detections(cameras, scene[:3], np.random.default_rng(7))
    with pytest.raises(ValueError, match="at least 2 cameras"):
        triangulate(uv[:1], confidence[:1], cameras[:1])
    with pytest.raises(ValueError, match=r"points2d: expected shape \[3 cameras"):
        triangulate(uv, confidence, cameras[:3])
    with pytest.raises(ValueError, match="confidence: expected shape"):
        triangulate(uv, confidence[:, :2], cameras)
    with pytest.raises(ValueError, match="confidence: 1 non-finite"):
        bad = confidence.copy()
        bad[0, 0, 0] = np.nan
        triangulate(uv, bad, cameras)
    with pytest.raises(ValueError, match="confidence: expected values >= 0"):
        triangulate(uv, -confidence, cameras)
    with pytest.raises(ValueError, match="cameras 0 .cam01. and 1 .cam01. share their optical centre"):
        triangulate(uv[:2], confidence[:2], [cameras[0], cameras[0].cropped((0, 0, 540, 960), (270, 480))])
    with pytest.raises(ValueError, match=r"cameras\[1\]: expected a Camera, got dict"):
        triangulate(uv[:2], confidence[:2], [cameras[0], {"K": np.eye(3)}])
    cameras[1].K[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"camera 1 \(cam02\) field 'K'"):
        triangulate(uv, confidence, cameras)
