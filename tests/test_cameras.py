import numpy as np
import pytest

from assets.cameras import Camera, bilinear_sample, reproject_image


def _rotation(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    return (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))


@pytest.fixture
def camera():
    return Camera(K=[[1100, 0, 495], [0, 1090, 510], [0, 0, 1]], dist=[-0.15, 0.05, 0.001, -0.0008, 0.01],
                  R=_rotation(0.1, -0.4, 0.05), t=[100, -200, 4000])


def test_world_camera_image_round_trip(camera):
    rng = np.random.default_rng(0)
    world = rng.uniform(-800, 800, size=(50, 17, 3))
    cam = camera.world_to_camera(world)
    np.testing.assert_allclose(camera.camera_to_world(cam), world, atol=1e-9)
    uv = camera.camera_to_image(cam)
    back = camera.image_to_camera(uv, cam[..., 2])
    np.testing.assert_allclose(back, cam, atol=1e-6)
    np.testing.assert_allclose(camera.world_to_camera(camera.center), 0, atol=1e-9)


def test_undistort_inverts_distortion(camera):
    cam_points = np.array([[300.0, -200, 3000], [-500, 400, 2500], [0, 0, 2000]])
    ideal = Camera(K=camera.K).camera_to_image(cam_points)
    np.testing.assert_allclose(camera.undistort_points(camera.camera_to_image(cam_points)), ideal, atol=1e-6)


def test_crop_camera_maps_pixels_like_the_crop(camera):
    points = np.array([[0.0, 0, 4000], [300, 500, 3500]])
    box = (200.0, 150.0, 400.0, 300.0)
    cropped = camera.cropped(box, (128, 96))
    full = camera.camera_to_image(points)
    expected = (full - [box[0], box[1]]) * [128 / 400, 96 / 300]
    np.testing.assert_allclose(cropped.camera_to_image(points), expected, atol=1e-9)


def test_looking_at_centres_the_point_and_keeps_the_optical_centre(camera):
    target = camera.world_to_camera(np.array([200.0, 100, 300]))
    virtual = camera.looking_at(target, focal=500, size=129)
    np.testing.assert_allclose(virtual.camera_to_image(virtual.world_to_camera(camera.camera_to_world(target))),
                               [64, 64], atol=1e-6)
    np.testing.assert_allclose(virtual.center, camera.center, atol=1e-6)
    assert np.allclose(virtual.dist, 0)


def test_reproject_image_moves_a_marked_pixel_to_its_new_projection(camera):
    image = np.zeros((1000, 1000, 3), np.uint8)
    point = np.array([150.0, -80, 3000])
    u, v = np.rint(camera.camera_to_image(point)).astype(int)
    image[v - 3:v + 4, u - 3:u + 4] = 255
    virtual = camera.looking_at(point, focal=2000, size=64)
    out = reproject_image(image, camera, virtual, (64, 64))
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(xs.mean() - 31.5) < 2 and abs(ys.mean() - 31.5) < 2


def test_bilinear_sample_interpolates_and_fills_outside():
    image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    out = bilinear_sample(image, np.array([[0.5, 0.0], [1.0, 1.5], [10.0, 0.0]]), fill=-1)
    np.testing.assert_allclose(out[:, 0], [0.5, 7.0, -1])


def test_invalid_camera_fields_are_named():
    with pytest.raises(ValueError, match="'K'"):
        Camera(K=np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="'R'"):
        Camera(K=np.eye(3), R=np.eye(2))
