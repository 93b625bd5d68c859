"""`dozens detect`: an image, a folder or a video in, everyone's poses (JSON) and rendered frames out.

A tiny random estimator does the estimating and a stub detector the finding (bright images hold two
candidate people, one above the default threshold; dark images none), so the test checks what the command
adds around ``detect_poses_batched``: reading media, batching, the JSON, rendering and the error messages.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import model
import model.detect_files as detect_files
from assets.joint_names import union_joint_names
from assets.skeletons import get_skeleton
from model.detect_files import detect_path
from model.drawing import Layout, layout_for, render
from model.estimator import PoseEstimator
from model.inference import PredictInputError
from model.media import open_media
from model.network import MetrabsConfig, MetrabsModel
from orchestration.cli import main
from raw_media import write_video

SIZE = (96, 128)  # height, width


def stub_detector(image):
    if image.mean() < 100:  # a dark image: nobody
        return np.zeros((0, 5), np.float32)
    height, width = image.shape[:2]
    return np.array([[0.2 * width, 0.1 * height, 0.3 * width, 0.8 * height, 0.9],
                     [0.6 * width, 0.2 * height, 0.25 * width, 0.7 * height, 0.3]], np.float32)


def _image(bright: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = 180 if bright else 20
    return (base + rng.integers(0, 40, (*SIZE, 3))).astype(np.uint8)


@pytest.fixture(scope="module")
def estimator_path(tmp_path_factory):
    torch.manual_seed(0)
    joints = union_joint_names(["h36m_17", "smpl_24"])
    network = MetrabsModel(MetrabsConfig(joint_names=joints, image_size=64, stride=16))
    return PoseEstimator(network, "separate", joints).save(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def estimator(estimator_path):
    return model.load(estimator_path)


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(detect_files, "DETECTOR", stub_detector)


def _close(written, expected, decimals):
    """Written (rounded) numbers match the estimator's own output up to the rounding."""
    expected = np.asarray(expected, np.float64)
    written = np.asarray(written, np.float64).reshape(expected.shape)
    np.testing.assert_allclose(written, expected, rtol=1e-6, atol=0.51 * 10 ** -decimals)


def test_an_image_file_gives_the_poses_of_detect_poses_rounded(estimator, tmp_path):
    image = _image(bright=True)
    Image.fromarray(image).save(tmp_path / "person.png")
    reports = []
    summary = detect_path(estimator, tmp_path / "person.png", skeleton="h36m_17", out=tmp_path / "out.json",
                          fov_degrees=60, detector=stub_detector, progress=reports.append)
    written = json.loads((tmp_path / "out.json").read_text())
    assert {k: written[k] for k in ("units", "frame", "skeleton")} == {"units": "mm", "frame": "camera",
                                                                        "skeleton": "h36m_17"}
    assert written["joint_names"] == list(get_skeleton("h36m_17").joint_names)
    assert written["source"] == str(tmp_path / "person.png") and written["camera"] == {"fov_degrees": 60.0}
    [frame] = written["frames"]
    expected = estimator.detect_poses(image, skeleton="h36m_17", fov_degrees=60, detector=stub_detector)
    assert frame["name"] == "person.png" and len(frame["boxes"]) == 1  # the 0.3 candidate is under 0.5
    assert np.asarray(frame["poses3d"]).shape == (1, 17, 3) and np.asarray(frame["poses2d"]).shape == (1, 17, 2)
    _close(np.asarray(frame["boxes"])[:, :4], expected["boxes"][:, :4], 2)
    _close(frame["poses3d"], expected["poses3d"], 1)
    _close(frame["poses2d"], expected["poses2d"], 2)
    assert (summary.frames, summary.people, summary.frames_without_people) == (1, 1, 0)
    assert reports and "1/1 frames" in reports[-1] and "1 people" in reports[-1]
    assert "1 people in 1 frame" in summary.describe()


def test_a_folder_with_render_and_an_empty_frame(estimator_path, tmp_path, stub, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_image(bright=True)).save(folder / "a.png")
    Image.fromarray(_image(bright=False)).save(folder / "b.jpg")
    Image.fromarray(_image(bright=True, seed=1)).save(folder / "b.png")  # b.jpg, b.png: b_jpg.jpg, b_png.jpg
    (folder / "notes.txt").write_text("not an image")  # other files and hidden ones are left alone
    (folder / ".hidden.png").write_bytes(b"")
    out, rendered = tmp_path / "results" / "poses.json", tmp_path / "rendered"
    assert main(["detect", str(folder), "--model", str(estimator_path), "--out", str(out), "--render",
                 str(rendered), "--threshold", "0.2", "--skeleton", "smpl_24"]) == 0
    written = json.loads(out.read_text())
    assert [f["name"] for f in written["frames"]] == ["a.png", "b.jpg", "b.png"]
    assert [len(f["boxes"]) for f in written["frames"]] == [2, 0, 2]  # both candidates from 0.2 on
    empty = written["frames"][1]
    assert empty["poses3d"] == [] and empty["poses2d"] == [] and empty["boxes"] == []
    assert np.asarray(written["frames"][2]["poses3d"]).shape == (2, 24, 3)
    assert sorted(p.name for p in rendered.iterdir()) == ["a.jpg", "b_jpg.jpg", "b_png.jpg"]
    for path in rendered.iterdir():
        with Image.open(path) as picture:
            assert picture.format == "JPEG" and picture.size == (SIZE[1], SIZE[0])
            picture.load()
    printed = capsys.readouterr().out
    assert "4 people in 3 frames" in printed and "1 without anyone" in printed and str(rendered) in printed


def test_a_video_streamed_in_batches(estimator_path, estimator, tmp_path, stub, capsys):
    frames = [_image(bright=i % 2 == 0, seed=i) for i in range(5)]
    video = tmp_path / "clip.mp4"
    write_video(video, frames, rate=25)
    media = open_media(video)
    assert media.kind == "video" and media.total == 5 and media.fps == 25
    out, rendered = tmp_path / "poses.json", tmp_path / "frames"
    assert main(["detect", str(video), "--model", str(estimator_path), "--out", str(out), "--render",
                 str(rendered), "--skeleton", "all", "--no-flip", "--batch-size", "2", "--fov", "70"]) == 0
    written = json.loads(out.read_text())
    assert written["skeleton"] == "all" and written["joint_names"] == list(estimator.joint_names)
    names = [f"frame_{i:06d}" for i in range(5)]
    assert [f["name"] for f in written["frames"]] == names
    assert [len(f["boxes"]) for f in written["frames"]] == [1, 0, 1, 0, 1]
    assert np.asarray(written["frames"][4]["poses3d"]).shape == (1, len(estimator.joint_names), 3)
    # the same frames, decoded the same way and batched the same way (frames 2 and 3 together), give the
    # same poses as a direct call without flip test
    decoded = [frame.image for frame in media.frames()]
    expected = estimator.detect_poses_batched(decoded[2:4], skeleton=None, fov_degrees=70, detector=stub_detector,
                                              flip_test=False)
    _close(written["frames"][2]["poses3d"], expected[0]["poses3d"], 1)
    assert sorted(p.stem for p in rendered.iterdir()) == names
    for path in rendered.iterdir():
        with Image.open(path) as picture:
            assert picture.size == (SIZE[1], SIZE[0])
            picture.load()
    assert "3 people in 5 frames" in capsys.readouterr().out


def test_json_to_stdout_and_intrinsics_from_a_file(estimator_path, estimator, tmp_path, stub, capsys):
    Image.fromarray(_image(bright=True)).save(tmp_path / "person.jpg")
    K = [[150.0, 0, 60.0], [0, 150.0, 50.0], [0, 0, 1]]
    camera = tmp_path / "camera.json"
    camera.write_text(json.dumps({"K": K, "dist": [0.05, -0.01, 0, 0, 0]}))
    assert main(["detect", str(tmp_path / "person.jpg"), "--model", str(estimator_path), "--out", "-",
                 "--intrinsics", str(camera), "--skeleton", "h36m_17"]) == 0
    captured = capsys.readouterr()
    written = json.loads(captured.out)
    assert written["camera"]["K"] == K and written["camera"]["dist"] == [0.05, -0.01, 0, 0, 0]
    assert "1 people in 1 frame" in captured.err and "stdout" in captured.err
    image = np.asarray(Image.open(tmp_path / "person.jpg").convert("RGB"))
    expected = estimator.detect_poses(image, skeleton="h36m_17", intrinsics=K, distortion=[0.05, -0.01, 0, 0, 0],
                                      detector=stub_detector)
    _close(written["frames"][0]["poses2d"], expected["poses2d"], 2)


def test_a_failed_run_keeps_the_previous_output(estimator, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_image(bright=True)).save(folder / "a.png")
    Image.fromarray(_image(bright=True)).save(folder / "b.png")
    content = (folder / "b.png").read_bytes()
    (folder / "b.png").write_bytes(content[:len(content) // 2])  # the header reads, the pixels do not
    out = tmp_path / "poses.json"
    out.write_text("previous")
    with pytest.raises(PredictInputError, match="b.png"):
        detect_path(estimator, folder, skeleton="smpl_24", out=out, detector=stub_detector)
    assert out.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["images", "poses.json"]


def test_bad_inputs_name_the_file_and_what_was_expected(estimator_path, estimator, tmp_path, stub, capsys):
    def error(*args):
        assert main(["detect", *args, "--model", str(estimator_path), "--out", str(tmp_path / "o.json")]) == 2
        return capsys.readouterr().err

    assert "missing.mp4 does not exist; expected an image file, a folder of images or a video" in \
        error(str(tmp_path / "missing.mp4"))
    (tmp_path / "empty").mkdir()
    assert "no image files" in error(str(tmp_path / "empty"))
    (tmp_path / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(2000))
    assert "broken.mp4: not a video PyAV (FFmpeg) can open" in error(str(tmp_path / "broken.mp4"))
    (tmp_path / "mystery.dat").write_bytes(b"neither")
    assert "neither an image Pillow can read nor a video PyAV can open" in error(str(tmp_path / "mystery.dat"))
    Image.fromarray(_image(bright=True)).save(tmp_path / "person.png")
    assert "--skeleton lsp_14: the model was not trained on the 'lsp_14' format; this model predicts h36m_17, " \
           "smpl_24" in error(str(tmp_path / "person.png"), "--skeleton", "lsp_14")
    assert "unknown skeleton format 'smpl24'" in error(str(tmp_path / "person.png"), "--skeleton", "smpl24")
    (tmp_path / "camera.json").write_text(json.dumps({"person.png": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}))
    assert "no key 'K'" in error(str(tmp_path / "person.png"), "--intrinsics", str(tmp_path / "camera.json"))
    (tmp_path / "camera.json").write_text(json.dumps({"K": [[100, 0, 640], [0, 100, 360], [0, 0, 1]]}))
    assert "principal point (cx, cy) = (640, 360) lies outside the 128x96 image person.png" in \
        error(str(tmp_path / "person.png"), "--intrinsics", str(tmp_path / "camera.json"))
    assert not (tmp_path / "o.json").exists()
    with pytest.raises(SystemExit):
        main(["detect", str(tmp_path / "person.png"), "--threshold", "1.5"])
    assert "expected a detector confidence between 0 and 1" in capsys.readouterr().err
    with pytest.raises(PredictInputError, match="batch-size"):
        detect_path(estimator, tmp_path / "person.png", skeleton="smpl_24", batch_size=0)


def test_render_draws_people_on_a_copy_at_the_input_size(estimator):
    image = _image(bright=False)
    big = np.full((540, 960, 3), 40, np.uint8)
    layout = Layout.of_skeleton(get_skeleton("smpl_24"))
    found = estimator.detect_poses(big, skeleton="smpl_24", detector=lambda _: np.array(
        [[300, 100, 150, 400, 0.9], [600, 120, 140, 380, 0.8]], np.float32))
    found["poses2d"][1, 3] = np.nan  # a joint that failed is left out, not drawn at a wild place
    picture = render(big, found, layout)
    assert picture.size == (960, 540) and (np.asarray(picture) != 40).any() and (big == 40).all()
    nobody = {"boxes": np.zeros((0, 5)), "poses2d": np.zeros((0, 24, 2)), "poses3d": np.zeros((0, 24, 3))}
    np.testing.assert_array_equal(np.asarray(render(image, nobody, layout)), image)
    everything = layout_for(estimator, None)
    assert len(everything.joint_names) == 41 and len(everything.edges) == len(get_skeleton("h36m_17").edges) + \
        len(get_skeleton("smpl_24").edges)
    all_found = estimator.detect_poses(big, skeleton=None, detector=lambda _: np.array([[300, 100, 150, 400]]))
    assert render(big, all_found, everything).size == (960, 540)


class _RecordingTracker:
    """A stand-in for the video tracker: records the frames it sees (their mean brightness), finds one person."""

    def __init__(self, threshold):
        self.threshold, self.seen = threshold, []

    def __call__(self, image):
        self.seen.append(float(image.mean()))
        height, width = image.shape[:2]
        return np.array([[0.2 * width, 0.1 * height, 0.3 * width, 0.8 * height, 0.9]])


def test_a_video_gets_a_fresh_tracker_that_sees_its_frames_in_order(estimator_path, estimator, tmp_path,
                                                                     monkeypatch):
    trackers = []

    def new_tracker(threshold):
        trackers.append(_RecordingTracker(threshold))
        return trackers[-1]

    monkeypatch.setattr(detect_files, "video_tracker", new_tracker)
    monkeypatch.setattr("model.detection._default_detector", stub_detector)  # what images and folders get
    levels = [40, 70, 110, 140, 170, 200, 230]
    video = tmp_path / "clip.mp4"
    write_video(video, [np.full((*SIZE, 3), level, np.uint8) for level in levels], rate=25)
    for _ in range(2):
        detect_path(estimator, video, skeleton="smpl_24", batch_size=3, threshold=0.4, flip_test=False)
    assert len(trackers) == 2 and trackers[0] is not trackers[1] and trackers[0].threshold == 0.4
    for tracker in trackers:  # every frame once, in the video's order, across batches of 3
        assert len(tracker.seen) == len(levels) and np.all(np.diff(tracker.seen) > 10)

    Image.fromarray(_image(bright=True)).save(tmp_path / "person.png")
    summary = detect_path(estimator, tmp_path / "person.png", skeleton="smpl_24", flip_test=False)
    assert summary.people == 1 and len(trackers) == 2  # an image: the stateless detector
    out = tmp_path / "poses.json"
    assert main(["detect", str(video), "--model", str(estimator_path), "--out", str(out), "--no-tracking",
                 "--no-flip"]) == 0
    assert len(trackers) == 2  # --no-tracking: the detector on every frame
    assert [len(f["boxes"]) for f in json.loads(out.read_text())["frames"]] == [0, 0, 1, 1, 1, 1, 1]
