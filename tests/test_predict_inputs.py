"""`dozens predict` edge cases: every bad input is refused with an error naming the option, file or key."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from assets.joint_names import union_joint_names
import model.inference as inference
from model.estimator import PoseEstimator
from model.inference import (PredictFileNotFoundError, PredictInputError, check_fov, crop_intrinsics, load_estimator,
                             predict_folder)
from model.network import MetrabsConfig, MetrabsModel
from orchestration.cli import main

SIZE = 64  # the tiny model's input size


@pytest.fixture(scope="module")
def estimator_path(tmp_path_factory):
    torch.manual_seed(0)
    joints = union_joint_names(["h36m_17", "smpl_24"])
    network = MetrabsModel(MetrabsConfig(joint_names=joints, image_size=SIZE, stride=16))
    return PoseEstimator(network, "separate", joints).save(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def estimator(estimator_path):
    return load_estimator(estimator_path)


@pytest.fixture
def crops(tmp_path):
    folder = tmp_path / "crops"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _assert_close(actual, expected, rtol=1e-4):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()))


def _pinhole(size, fov_degrees=50.0):
    focal = size / (2 * math.tan(math.radians(fov_degrees) / 2))
    return [[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1]]


# -- field of view -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fov", [0, 0.0, 180, 200, -30, math.nan, math.inf])
def test_fov_outside_0_to_180_is_refused_naming_the_option_and_value(estimator, crops, fov):
    with pytest.raises(PredictInputError, match=r"--fov") as error:
        predict_folder(estimator, crops, skeleton="h36m_17", fov_degrees=fov)
    assert repr(fov) in str(error.value) and "between 0 and 180" in str(error.value)
    with pytest.raises(ValueError):
        crop_intrinsics(SIZE, fov)


@pytest.mark.parametrize("text", ["0", "180", "nan", "-5", "inf", "wide"])
def test_cli_refuses_a_bad_fov_with_a_usage_error(crops, estimator_path, capsys, text):
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(crops), "--model", str(estimator_path), "--fov", text])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--fov" in err and repr(text) in err


def test_fov_and_intrinsics_together_are_refused(estimator, crops, tmp_path, capsys, estimator_path):
    table = tmp_path / "K.json"
    table.write_text(json.dumps({"a.png": _pinhole(96), "b.jpg": _pinhole(96)}))
    with pytest.raises(PredictInputError, match="--fov 50.*--intrinsics"):
        predict_folder(estimator, crops, skeleton="h36m_17", fov_degrees=50, intrinsics_file=table)
    with pytest.raises(SystemExit):
        main(["predict", str(crops), "--model", str(estimator_path), "--fov", "50", "--intrinsics", str(table)])
    assert "not allowed with" in capsys.readouterr().err


def test_valid_fov_values_are_accepted_as_floats():
    assert check_fov("55") == 55.0 and check_fov(179.5) == 179.5 and check_fov(0.5) == 0.5


# -- the normal path ---------------------------------------------------------------------------------------

def test_crops_give_finite_poses_in_front_of_the_camera(estimator, estimator_path, crops, tmp_path):
    for fov in (None, 50.0):
        poses = predict_folder(estimator, crops, skeleton="h36m_17", fov_degrees=fov)
        assert sorted(poses) == ["a.png", "b.jpg"]
        for pose in poses.values():
            assert pose.shape == (17, 3) and np.isfinite(pose).all() and (pose[:, 2] > 0).all()
    out = tmp_path / "poses.json"
    assert main(["predict", str(crops), "--model", str(estimator_path), "--skeleton", "smpl_24", "--fov", "50",
                 "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert len(written["poses"]["a.png"]) == 24


# -- image size --------------------------------------------------------------------------------------------

def _record_sizes(monkeypatch, method):
    """Sizes of the images ``Image.Image.<method>`` is called on."""
    seen = []
    original = getattr(Image.Image, method)

    def spy(self, *args, **kwargs):
        seen.append(self.size)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, method, spy)
    return seen


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_large_image_is_shrunk_while_loading(estimator, tmp_path, monkeypatch, suffix):
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir(), small.mkdir()
    Image.new("RGB", (4000, 4000)).save(big / f"crop{suffix}")  # zeros: a few kB on disk
    Image.new("RGB", (SIZE, SIZE)).save(small / "crop.png")
    expected = predict_folder(estimator, small, skeleton="h36m_17")["crop.png"]
    resized, converted = _record_sizes(monkeypatch, "resize"), _record_sizes(monkeypatch, "convert")
    poses = predict_folder(estimator, big, skeleton="h36m_17")
    assert poses[f"crop{suffix}"].shape == expected.shape
    _assert_close(poses[f"crop{suffix}"], expected)
    # no full-resolution copy; JPEG is not even decoded at full resolution (1/8 scale)
    assert max(max(size) for size in converted) <= 4 * SIZE
    assert max(max(size) for size in resized) <= (500 if suffix == ".jpg" else 4000)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_intrinsics_of_the_stored_resolution_are_scaled_with_the_shrunk_image(estimator, tmp_path, suffix):
    folder = tmp_path / "crops"
    folder.mkdir()
    blocks = np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(np.repeat(np.repeat(blocks, 64, axis=0), 64, axis=1)).save(folder / f"crop{suffix}")  # 2048 px
    table = tmp_path / "K.json"
    table.write_text(json.dumps({f"crop{suffix}": _pinhole(2048, 50.0)}))
    # the same camera, given at 2048 px or as a field of view, is the same camera at the model's 64 px
    from_table = predict_folder(estimator, folder, skeleton="h36m_17", intrinsics_file=table)[f"crop{suffix}"]
    from_fov = predict_folder(estimator, folder, skeleton="h36m_17", fov_degrees=50.0)[f"crop{suffix}"]
    _assert_close(from_table, from_fov)


def test_palette_alpha_and_grey_images_load_like_their_rgb_version(estimator, tmp_path):
    folder = tmp_path / "modes"
    folder.mkdir()
    rgb = Image.fromarray(np.repeat(np.repeat(
        np.random.default_rng(3).integers(0, 255, (8, 8, 3), dtype=np.uint8), 75, axis=0), 75, axis=1))  # 600 px
    rgb.save(folder / "rgb.png")
    rgb.convert("RGBA").save(folder / "rgba.png")
    rgb.quantize(256).save(folder / "palette.png")
    rgb.convert("L").save(folder / "grey.png")
    rgb.convert("L").convert("RGB").save(folder / "grey_rgb.png")
    poses = predict_folder(estimator, folder, skeleton="h36m_17")
    assert all(np.isfinite(pose).all() for pose in poses.values())
    _assert_close(poses["rgba.png"], poses["rgb.png"])
    _assert_close(poses["grey.png"], poses["grey_rgb.png"])


def test_an_image_over_the_pixel_limit_is_refused_naming_file_size_and_limit(estimator, crops, monkeypatch):
    Image.new("RGB", (100, 100)).save(crops / "huge.png")
    monkeypatch.setattr(inference, "MAX_IMAGE_PIXELS", 100 * 100 - 1)
    with pytest.raises(PredictInputError) as error:
        predict_folder(estimator, crops, skeleton="h36m_17")
    message = str(error.value)
    assert "huge.png" in message and "100x100" in message and "9999" in message


def test_pil_decompression_bomb_error_becomes_our_message(estimator, tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this
    with pytest.raises(PredictInputError) as error:
        predict_folder(estimator, tmp_path, skeleton="h36m_17")
    message = str(error.value)
    assert "bomb.png" in message and "10000 pixels" in message and "limit of 2000 pixels" in message


def test_pil_decompression_bomb_warning_is_not_raised_below_our_limit(estimator, crops, monkeypatch):
    Image.new("RGB", (100, 100)).save(crops / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # PIL warns above this, refuses above twice this
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert "big.png" in predict_folder(estimator, crops, skeleton="h36m_17")


def test_unreadable_and_non_square_images_are_named(estimator, crops):
    Image.new("RGB", (80, 60)).save(crops / "wide.png")
    with pytest.raises(PredictInputError, match=r"wide\.png.*square.*80x60"):
        predict_folder(estimator, crops, skeleton="h36m_17")
    (crops / "wide.png").unlink()
    (crops / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(PredictInputError, match=r"junk\.jpg.*not a readable image"):
        predict_folder(estimator, crops, skeleton="h36m_17")


# -- intrinsics file ---------------------------------------------------------------------------------------

GOOD = _pinhole(96)


@pytest.mark.parametrize("content, expected", [
    ("{", "invalid JSON"),
    ("[]", "expected a JSON object mapping image file names"),
    (json.dumps({"a.png": GOOD}), r"no entry for 1 of the 2 images: 'b\.jpg'"),
    (json.dumps({"a.png": GOOD, "b.jpg": [[1, 2], [3, 4]]}), r"'b\.jpg'.*3x3 matrix of numbers"),
    (json.dumps({"a.png": GOOD, "b.jpg": "K"}), r"'b\.jpg'.*3x3 matrix of numbers"),
    (json.dumps({"a.png": GOOD, "b.jpg": [[1, 0, 0], [0, 1, 0], [0, 0, True]]}), r"'b\.jpg'.*3x3 matrix"),
    (json.dumps({"a.png": GOOD, "b.jpg": [[100, 0, "48"], [0, 100, 48], [0, 0, 1]]}), r"'b\.jpg'.*3x3 matrix"),
    ('{"a.png": [[NaN, 0, 48], [0, 100, 48], [0, 0, 1]], "b.jpg": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}',
     r"'a\.png'.*finite"),
    ('{"a.png": [[1' + "0" * 400 + ', 0, 48], [0, 100, 48], [0, 0, 1]], "b.jpg": []}', r"'a\.png'.*finite"),
    (json.dumps({"a.png": GOOD, "b.jpg": [[0, 0, 48], [0, 100, 48], [0, 0, 1]]}), r"'b\.jpg'.*positive focal"),
    (json.dumps({"a.png": GOOD, "b.jpg": [[100, 0, 48], [0, -1, 48], [0, 0, 1]]}), r"'b\.jpg'.*positive focal"),
    (json.dumps({"a.png": GOOD, "b.jpg": [[100, 0, 48], [0, 100, 48], [0, 0, 2]]}), r"'b\.jpg'.*\[0, 0, 1\]"),
])
def test_bad_intrinsics_name_the_file_the_key_and_what_was_expected(estimator, crops, tmp_path, content, expected):
    table = tmp_path / "intrinsics.json"
    table.write_text(content)
    with pytest.raises(PredictInputError, match=expected) as error:
        predict_folder(estimator, crops, skeleton="h36m_17", intrinsics_file=table)
    assert str(table) in str(error.value)


def test_a_missing_intrinsics_file_is_named(estimator, crops, tmp_path):
    with pytest.raises(FileNotFoundError, match="intrinsics file .*nowhere.json") as error:
        predict_folder(estimator, crops, skeleton="h36m_17", intrinsics_file=tmp_path / "nowhere.json")
    assert isinstance(error.value, PredictInputError)


def test_valid_intrinsics_give_the_same_poses_as_the_same_field_of_view(estimator, crops, tmp_path):
    table = tmp_path / "K.json"
    table.write_text(json.dumps({"a.png": _pinhole(96, 40.0), "b.jpg": _pinhole(96, 40.0), "unused.png": None}))
    from_table = predict_folder(estimator, crops, skeleton="h36m_17", intrinsics_file=table)
    from_fov = predict_folder(estimator, crops, skeleton="h36m_17", fov_degrees=40.0)
    for name in from_fov:
        _assert_close(from_table[name], from_fov[name])


# -- folder, model, skeleton -------------------------------------------------------------------------------

def test_the_images_folder_must_exist_be_a_folder_and_hold_images(estimator, tmp_path):
    with pytest.raises(FileNotFoundError, match="images folder .*missing does not exist"):
        predict_folder(estimator, tmp_path / "missing", skeleton="h36m_17")
    (tmp_path / "one.png").write_bytes(b"")
    with pytest.raises(PredictInputError, match=r"one\.png is a file, not a folder"):
        predict_folder(estimator, tmp_path / "one.png", skeleton="h36m_17")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no image files"):
        predict_folder(estimator, tmp_path / "empty", skeleton="h36m_17")


def test_model_file_errors_name_it_and_say_how_to_train_one(tmp_path, crops, capsys):
    missing = tmp_path / "models" / "model.pt"
    with pytest.raises(PredictFileNotFoundError, match=r"model\.pt does not exist.*make demo"):
        load_estimator(missing)
    with pytest.raises(PredictInputError, match="is a folder.*make demo"):
        load_estimator(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_estimator(tmp_path / "junk.pt")
    # the CLI may report it as a message or let it propagate; either way it names the file and the fix
    try:
        code = main(["predict", str(crops), "--model", str(missing)])
        message = capsys.readouterr().err
        assert code != 0
    except PredictFileNotFoundError as exc:
        message = str(exc)
    assert str(missing) in message and "make demo" in message


def test_skeleton_errors_list_what_the_model_predicts(estimator, crops):
    with pytest.raises(PredictInputError, match=r"unknown skeleton format 'nope'.*h36m_17, smpl_24.*'all'"):
        predict_folder(estimator, crops, skeleton="nope")
    with pytest.raises(PredictInputError, match=r"not trained on the 'lsp_14' format.*h36m_17, smpl_24"):
        predict_folder(estimator, crops, skeleton="lsp_14")
