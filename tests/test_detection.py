"""detect_poses on whole images: people found or given, cropped like training crops, mapped back exactly.

Scenes come from the demo world's renderer (0, 1 and 2 people seen by a lens-distorted camera). An oracle
estimator that answers with the true pose in whatever crop camera it is handed isolates the geometry:
if the crops and the mapping back are right, detect_poses returns the truth in the original camera's
frame and its projection through the distorted lens.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import model.detection as detection
from assets.cameras import Camera
from assets.converters.common import RawExample, canonical_crop, person_box
from assets.joint_names import union_joint_names
from assets.synthetic.body import Body, Subject
from assets.synthetic.motion import generate_motion
from assets.synthetic.render import Figure, Scene, render_people
from assets.synthetic.rigs import look_at
from model.detection import DetectionInputError, detect_poses, detect_poses_batched
from model.estimator import PoseEstimator
from model.network import MetrabsConfig, MetrabsModel

FRAME = (640, 480)
SKELETON = "h36m_17"


def _person(seed: int, centre) -> tuple[Figure, np.ndarray]:
    body = Body(Subject.random(seed, "detection-test"))
    frames = generate_motion("wave", np.array([1.0]), seed, "detection-test", centre=centre, radius=10.0).frames(body)
    start, end = body.capsule_endpoints(frames)
    figure = Figure(start[0], end[0], body.capsule_radii, body.capsule_colours, ground_xy=frames.origins[0, 0, :2])
    return figure, body.joints(SKELETON, frames)[0]


@pytest.fixture(scope="module")
def scene():
    """A distorted camera looking at two people standing side by side, and the truth in its frame."""
    K = [[520.0, 0, 322.0], [0, 520.0, 236.0], [0, 0, 1]]
    camera = look_at(K, [-0.3, 0.08, 0.001, -0.002, 0.0], np.array([0.0, -4500.0, 1300.0]),
                     np.array([0.0, 0.0, 900.0]))
    people = [_person(1, (-1800.0, 0.0)), _person(2, (1000.0, 300.0))]
    truths = [camera.world_to_camera(joints) for _, joints in people]
    boxes = [person_box(camera.camera_to_image(truth)) for truth in truths]
    backdrop = Scene.random(0, "detection-test")
    images = {count: render_people(camera, FRAME, [figure for figure, _ in people[:count]], backdrop)
              for count in (0, 1, 2)}
    # detect_poses knows only the image's intrinsics and lens: its camera frame is this camera's
    image_camera = Camera(K=camera.K, dist=camera.dist)
    return SimpleNamespace(camera=image_camera, truths=truths, boxes=boxes, images=images)


class OracleEstimator:
    """Answers every crop with the true pose of the person it was cut for, in that crop's camera."""

    def __init__(self, truths, image_size: int, monkeypatch):
        self.truths = list(truths)
        self.network = SimpleNamespace(config=SimpleNamespace(image_size=image_size))
        self.joint_names = tuple(union_joint_names([SKELETON]))
        self.crop_cameras, self.crops, self.intrinsics = [], [], []
        cut = detection.person_crop_camera

        def recording(*args, **kwargs):
            camera = cut(*args, **kwargs)
            self.crop_cameras.append(camera)
            return camera

        monkeypatch.setattr(detection, "person_crop_camera", recording)

    def skeletons(self):
        return [SKELETON]

    def predict(self, crops, intrinsics, skeleton=None, *, flip_test=True):
        first = len(self.crops)
        self.crops.extend(crops)
        self.intrinsics.extend(intrinsics)
        return np.stack([self.truths[k] @ self.crop_cameras[k].R.T
                         for k in range(first, first + len(crops))]).astype(np.float32)


def _relative_error(found, expected) -> float:
    return float(np.abs(np.asarray(found, np.float64) - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("count", [1, 2])
def test_poses_come_back_in_the_original_camera_and_project_through_its_lens(scene, monkeypatch, count):
    oracle = OracleEstimator(scene.truths[:count], 128, monkeypatch)
    out = detect_poses(oracle, scene.images[count], SKELETON, boxes=np.array(scene.boxes[:count]),
                       intrinsics=scene.camera.K, distortion=scene.camera.dist)
    assert out["boxes"].shape == (count, 5) and out["poses3d"].shape == (count, 17, 3)
    assert out["poses2d"].shape == (count, 17, 2)
    np.testing.assert_array_equal(out["boxes"][:, 4], 1.0)  # given boxes without a confidence
    for k in range(count):
        # float32 outputs: millimetres at ~5 m and pixels of a 640 px frame, both to float32 precision
        assert _relative_error(out["poses3d"][k], scene.truths[k]) < 1e-5
        assert _relative_error(out["poses2d"][k], scene.camera.camera_to_image(scene.truths[k])) < 1e-5
    # the lens matters here: the pinhole projection of the truth lies pixels away from the answer
    pinhole = Camera(K=scene.camera.K).camera_to_image(scene.truths[0])
    assert np.abs(pinhole - out["poses2d"][0]).max() > 3


def test_crops_are_the_converters_crops_of_the_same_person(scene, monkeypatch):
    """Same box, same virtual camera, same pixels: the model sees people as it saw them in training."""
    oracle = OracleEstimator(scene.truths, 256, monkeypatch)  # no reduction: the person spans < 2 crops
    detect_poses(oracle, scene.images[2], SKELETON, boxes=np.array(scene.boxes), intrinsics=scene.camera.K,
                 distortion=scene.camera.dist)
    for k, truth in enumerate(scene.truths):
        example = RawExample(image_path=None, frame_camera=scene.camera, split="test", subject="s", sequence="q",
                             frame=0, camera="c", pose3d=truth)
        expected = canonical_crop(example, scene.images[2], 256)
        np.testing.assert_array_equal(oracle.crops[k], expected["image"])
        np.testing.assert_allclose(oracle.intrinsics[k], expected["intrinsics"], rtol=1e-6)


def test_zero_people_gives_empty_arrays_of_the_right_shapes(scene, monkeypatch):
    oracle = OracleEstimator([], 64, monkeypatch)
    out = detect_poses(oracle, scene.images[0], SKELETON, detector=lambda image: np.zeros((0, 5)))
    assert out["boxes"].shape == (0, 5) and out["poses3d"].shape == (0, 17, 3) and out["poses2d"].shape == (0, 17, 2)
    assert oracle.crops == []


def test_the_detector_finds_people_and_its_threshold_and_limit_apply(scene, monkeypatch):
    found = np.array([[*scene.boxes[1], 0.6], [*scene.boxes[0], 0.9], [10, 10, 30, 60, 0.2]])
    seen = []

    def detector(image):
        seen.append(image.shape)
        return found

    oracle = OracleEstimator([scene.truths[0], scene.truths[1]], 64, monkeypatch)
    out = detect_poses(oracle, scene.images[2], SKELETON, detector=detector, detection_threshold=0.5,
                       intrinsics=scene.camera.K, distortion=scene.camera.dist)
    assert seen == [(FRAME[1], FRAME[0], 3)]
    np.testing.assert_allclose(out["boxes"][:, 4], [0.9, 0.6])  # by confidence; the 0.2 one is dropped
    assert _relative_error(out["poses3d"][0], scene.truths[0]) < 1e-5

    oracle = OracleEstimator([scene.truths[0]], 64, monkeypatch)
    out = detect_poses(oracle, scene.images[2], SKELETON, detector=detector, max_people=1)
    assert len(out["boxes"]) == 1 and out["boxes"][0, 4] == pytest.approx(0.9)


def test_large_people_are_cut_from_a_reduced_image_on_the_same_camera():
    """A reduction level's camera sees each pixel where the original sees the centre of its 2x2 block."""
    camera = Camera(K=[[300.0, 0, 40.0], [0, 310.0, 30.0], [0, 0, 1]], dist=[-0.1, 0.01, 0, 0, 0])
    image = np.zeros((60, 80, 3), np.uint8)
    image[20:22, 30:32] = 200
    pyramid = detection._Pyramid(image, camera)
    reduced, reduced_camera = pyramid.level(1)
    assert reduced.shape == (30, 40, 3)
    assert tuple(np.argwhere(reduced[..., 0] == 200)[0]) == (10, 15)
    np.testing.assert_allclose(reduced_camera.image_to_normalized([15.0, 10.0]),
                               camera.image_to_normalized([30.5, 20.5]), rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def estimator():
    torch.manual_seed(0)
    joints = union_joint_names([SKELETON, "smpl_24"])
    return PoseEstimator(MetrabsModel(MetrabsConfig(joint_names=joints, image_size=64, stride=16)), "separate", joints)


def test_a_real_network_answers_for_each_person_and_batches_match_single_images(scene, estimator):
    boxes = np.array(scene.boxes)
    single = detect_poses(estimator, scene.images[2], "smpl_24", boxes=boxes, intrinsics=scene.camera.K,
                          distortion=scene.camera.dist)
    assert single["poses3d"].shape == (2, 24, 3)
    # 2D is the 3D answer seen through the image's own lens
    projected = scene.camera.camera_to_image(single["poses3d"].astype(np.float64))
    assert _relative_error(single["poses2d"], projected) < 1e-5
    batched = detect_poses_batched(estimator, [scene.images[0], scene.images[2]], "smpl_24",
                                   boxes=[np.zeros((0, 4)), boxes], intrinsics=scene.camera.K,
                                   distortion=scene.camera.dist)
    assert batched[0]["poses3d"].shape == (0, 24, 3)
    assert _relative_error(batched[1]["poses3d"], single["poses3d"]) < 1e-4
    everything = detect_poses(estimator, scene.images[1], boxes=boxes[:1], fov_degrees=60, flip_test=False)
    assert everything["poses3d"].shape == (1, len(estimator.joint_names), 3)


def test_an_image_file_of_any_size_is_read(scene, estimator, tmp_path):
    from PIL import Image

    path = tmp_path / "frame.png"
    Image.fromarray(scene.images[1]).save(path)
    out = detect_poses(estimator, path, SKELETON, boxes=np.array(scene.boxes[:1]))
    from_array = detect_poses(estimator, scene.images[1], SKELETON, boxes=np.array(scene.boxes[:1]))
    np.testing.assert_array_equal(out["poses3d"], from_array["poses3d"])


def test_bad_inputs_name_what_was_expected(scene, estimator, tmp_path):
    image = scene.images[1]
    with pytest.raises(DetectionInputError, match=r"image: expected a uint8 RGB array \[H, W, 3\]"):
        detect_poses(estimator, image[..., 0], boxes=np.zeros((0, 4)))
    with pytest.raises(DetectionInputError, match=r"boxes\[0\]: expected finite numbers with positive width"):
        detect_poses(estimator, image, boxes=[[0, 0, -5, 10]])
    with pytest.raises(DetectionInputError, match=r"boxes: expected \[N, 4\] or \[N, 5\]"):
        detect_poses(estimator, image, boxes=[[0, 0, 5]])
    with pytest.raises(DetectionInputError, match=r"boxes: expected one box array per image \(2\), got 1"):
        detect_poses_batched(estimator, [image, image], boxes=[np.zeros((0, 4))])
    with pytest.raises(DetectionInputError, match=r"intrinsics: expected a finite 3x3 matrix"):
        detect_poses(estimator, image, boxes=np.zeros((0, 4)), intrinsics=[[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="--skeleton coco_19: the model was not trained on the 'coco_19' format"):
        detect_poses(estimator, image, "coco_19", boxes=np.zeros((0, 4)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_poses(estimator, tmp_path / "missing.jpg", boxes=np.zeros((0, 4)))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DetectionInputError, match="broken.jpg: not a readable image"):
        detect_poses(estimator, tmp_path / "broken.jpg", boxes=np.zeros((0, 4)))
