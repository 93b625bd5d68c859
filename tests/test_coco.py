"""The coco converter on small raw trees in the real COCO person keypoints layout (docs/converters/coco.md).

The trees are written as the release unzips: ``annotations/person_keypoints_{train,val}2017.json`` (or the
2014 names) with ``info``, ``licenses``, ``images``, ``annotations`` and ``categories`` as the real files
have them, and ``{train,val}2017/<file_name>`` JPEGs (tiny: 96 x 64 px). Keypoints are planted integer
pixel indices of a standing person, with unlabelled (v=0, stored as 0, 0) and occluded (v=1) ones, crowd
annotations and annotations without keypoints beside them.
"""

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assets.converters import get_converter
from assets.converters.common import assumed_camera, convert
from assets.person_crops import BOX_PADDING
from assets.converters.interface import OptionError, resolve_options
from assets.converters.raw_io import RawDataError
from assets.quality import run_store_checks
from assets.skeletons import get_skeleton
from assets.store import open_store
from converter_checks import assert_refused_keeping_the_store

coco = get_converter("coco")

W, H = 96, 64
SIZE = 64  # crop side of the main conversion
KEYPOINT_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle"]
# a standing person facing the camera (its left on the image's right): (dx, dy) from (centre x, top y), px
TEMPLATE = np.array([[0, 4], [2, 2], [-2, 2], [4, 3], [-4, 3], [7, 10], [-7, 10], [9, 18], [-9, 18], [10, 25],
                     [-10, 25], [4, 26], [-4, 26], [5, 35], [-5, 35], [5, 44], [-5, 44]])
J = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

# image ids per split, in the images list's order; image 1000 has no person annotation at all
IMAGES = {"val": [785, 872, 1000], "train": [9, 25]}
TWO_PEOPLE = 785
BLOB_IMAGE, BLOB_ANNOTATION, BLOB_JOINT = 785, 101, J["nose"]


def _person(cx: int, top: int, flags: dict | None = None) -> list[int]:
    """Flat COCO keypoints of the template at (cx, top); ``flags`` joint -> v (default 2)."""
    flat = []
    for j, (dx, dy) in enumerate(TEMPLATE):
        v = (flags or {}).get(j, 2)
        flat += [0, 0, 0] if v == 0 else [int(cx + dx), int(top + dy), v]
    return flat


def _annotation(ann_id: int, image_id: int, keypoints: list[int], iscrowd: int = 0) -> dict:
    kp = np.array(keypoints).reshape(-1, 3)
    labelled = kp[:, 2] > 0
    if labelled.any():
        lo, hi = kp[labelled, :2].min(0), kp[labelled, :2].max(0)
        bbox = [float(lo[0]) - 2, float(lo[1]) - 2, float(hi[0] - lo[0]) + 4, float(hi[1] - lo[1]) + 4]
    else:
        bbox = [40.0, 20.0, 8.0, 10.0]
    segmentation = {"counts": [0, 12, 30], "size": [H, W]} if iscrowd else \
        [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]]
    return {"segmentation": segmentation, "num_keypoints": int(labelled.sum()), "area": bbox[2] * bbox[3] * 0.6,
            "iscrowd": iscrowd, "keypoints": list(keypoints), "image_id": image_id, "bbox": bbox,
            "category_id": 1, "id": ann_id}


def image_name(split: str, year: int, image_id: int) -> str:
    """The release's file names: 000000000785.jpg (2017), COCO_val2014_000000000785.jpg (2014)."""
    return f"{image_id:012d}.jpg" if year == 2017 else f"COCO_{split}{year}_{image_id:012d}.jpg"


def planted_annotations(split: str) -> list[dict]:
    """The file's annotations list, in file order."""
    if split == "val":
        return [
            # 785: two people; the left one has an unlabelled left ear (0, 0) and an occluded right ankle
            _annotation(101, 785, _person(24, 8, {J["left_ear"]: 0, J["right_ankle"]: 1})),
            # 872: one person with occluded joints, one crowd region, one person without keypoints
            _annotation(201, 872, _person(48, 10, {J["left_wrist"]: 1, J["left_knee"]: 1, J["nose"]: 0})),
            _annotation(202, 872, [0] * 51, iscrowd=1),
            _annotation(203, 872, [0] * 51),
            _annotation(102, 785, _person(70, 6, {J["left_wrist"]: 0})),
            # num_keypoints 0 decides, even where the keypoints list holds labels
            {**_annotation(205, 872, _person(48, 10)), "num_keypoints": 0},
        ]
    return [
        _annotation(301, 9, _person(40, 9)),
        _annotation(302, 25, _person(22, 8, {J["right_eye"]: 1})),
        # a crowd region that (unlike the release's, which have num_keypoints 0) carries keypoints: still skipped
        _annotation(304, 25, _person(48, 9), iscrowd=1),
        _annotation(303, 25, _person(71, 9, {J["right_ear"]: 0, J["left_ear"]: 0})),
    ]


KEPT = {"val": {101, 102, 201}, "train": {301, 302, 303}}
SKIPPED = {202, 203, 205, 304}  # crowd, no keypoints, num_keypoints 0, crowd with keypoints


def planted_by_subject(year: int = 2017) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """subject code -> (keypoints [17, 3] as in the file, image id, position in the file)."""
    out = {}
    for split in ("train", "val"):
        for index, ann in enumerate(planted_annotations(split)):
            out[f"{split}{year}/{ann['id']}"] = (np.array(ann["keypoints"], float).reshape(17, 3), ann["image_id"],
                                                 index)
    return out


def coco_json(split: str, year: int = 2017) -> dict:
    return {
        "info": {"description": "COCO 2017 Dataset", "url": "http://cocodataset.org", "version": "1.0",
                 "year": year, "contributor": "COCO Consortium", "date_created": "2017/09/01"},
        "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4, "name": "Attribution License"}],
        "images": [{"license": 4, "file_name": image_name(split, year, image_id),
                    "coco_url": f"http://images.cocodataset.org/{split}{year}/{image_name(split, year, image_id)}",
                    "height": H, "width": W, "date_captured": "2013-11-14 17:02:52", "flickr_url": "", "id": image_id}
                   for image_id in IMAGES[split]],
        "annotations": planted_annotations(split),
        "categories": [{"supercategory": "person", "id": 1, "name": "person", "keypoints": list(KEYPOINT_NAMES),
                        "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                                     [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                                     [4, 6], [5, 7]]}],
    }


def _blob_image() -> np.ndarray:
    """Black, with a Gaussian blob centred on the planted pixel (integer = pixel centre) of one joint."""
    keypoints = next(a for a in planted_annotations("val") if a["id"] == BLOB_ANNOTATION)["keypoints"]
    u, v = keypoints[3 * BLOB_JOINT], keypoints[3 * BLOB_JOINT + 1]
    yy, xx = np.mgrid[0:H, 0:W]
    blob = 250 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 1.5 ** 2))
    return np.repeat(blob[..., None], 3, axis=-1).astype(np.uint8)


def write_raw_tree(root: Path, year: int = 2017, splits=("train", "val")) -> Path:
    rng = np.random.default_rng(year)
    for split in splits:
        path = root / "annotations" / f"person_keypoints_{split}{year}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(coco_json(split, year)))
        folder = root / f"{split}{year}"
        folder.mkdir(parents=True, exist_ok=True)
        for image_id in IMAGES[split]:
            name = image_name(split, year, image_id)
            if (split, image_id) == ("val", BLOB_IMAGE):
                pixels = _blob_image()
            else:
                pixels = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / name, quality=100, subsampling=0)
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_raw_tree(tmp_path_factory.mktemp("coco") / "coco")


@pytest.fixture(scope="module")
def converted(pristine, tmp_path_factory):
    return convert(coco, pristine, tmp_path_factory.mktemp("coco_store") / "coco.zarr", image_size=SIZE)


def _names(store, key: str) -> list[str]:
    return [store.attrs["codes"][key][c] for c in store.load(key)]


def _crop_camera(box: np.ndarray, intrinsics: np.ndarray):
    """The crop camera rebuilt from what the store says: the frame's assumed camera (the 96 x 64 image's),
    turned to look at the centre of the stored person box, with the stored intrinsics."""
    frame = assumed_camera(W, H)
    centre = box[:2] + box[2:] / 2
    ray = np.append(frame.image_to_normalized(centre), 1.0)
    return frame, frame.looking_at(ray, intrinsics[0, 0], SIZE)


def _to_crop(frame, crop, uv: np.ndarray) -> np.ndarray:
    rays = np.concatenate([frame.image_to_normalized(uv), np.ones((len(uv), 1))], axis=-1)
    return crop.camera_to_image(rays @ (crop.R @ frame.R.T).T)


# -- conversion ----------------------------------------------------------------------------------------
def test_registered_with_the_declared_protocol():
    assert get_converter("coco") is coco
    assert (coco.NAME, coco.SKELETON, coco.CAMERAS) == ("coco", "coco_17", ())
    options = resolve_options(coco, None)
    assert options.frame_step == coco.DEFAULT_FRAME_STEP == 1 and options.cameras == ()
    assert options.extra == {"year": "auto", "splits": ["train", "val"], "min_keypoints": 1}
    with pytest.raises(OptionError, match="no camera choice"):
        resolve_options(coco, {"cameras": ["unknown"]})
    assert inspect.isgenerator(coco.read_examples(Path("/nonexistent"), options))  # lazy
    # the file's keypoint names, in order, are the skeleton's joints (nose, l/r + eye, ear, sho, ...)
    short = {"eye": "eye", "ear": "ear", "shoulder": "sho", "elbow": "elb", "wrist": "wri", "hip": "hip",
             "knee": "kne", "ankle": "ank"}
    expected = [n if n == "nose" else n[0] + short[n.split("_")[1]] for n in KEYPOINT_NAMES]
    assert list(get_skeleton("coco_17").joint_names) == expected
    assert list(coco.KEYPOINT_NAMES) == KEYPOINT_NAMES


def test_planted_keypoints_come_back_up_to_the_crop_transform(converted):
    store = open_store(converted.path)
    assert converted.counts == {"train": 3, "val": 3, "test": 0}
    assert store.attrs["intrinsics_assumed"] is True and store.attrs["has_pose3d"] is False
    pose2d, valid = store.load("pose2d").astype(np.float64), store.load("joint_valid")
    intrinsics, bbox = store.load("intrinsics").astype(np.float64), store.load("bbox").astype(np.float64)
    assert np.isnan(store.load("pose3d")).all() and np.isnan(store.load("extrinsics")).all()
    assert not np.any(store.load("distortion"))
    planted = planted_by_subject()
    subjects, frames = _names(store, "subject"), store.load("frame")
    for i, subject in enumerate(subjects):
        keypoints, image_id, index = planted[subject]
        split = subject.split("/")[0]
        assert _names(store, "sequence")[i] == f"{split}/{image_id}" and frames[i] == index
        labelled = keypoints[:, 2] > 0
        np.testing.assert_array_equal(valid[i], labelled)
        assert np.isnan(pose2d[i][~labelled]).all()
        # the person box is the tight box of the labelled planted pixels, exactly
        lo, hi = keypoints[labelled, :2].min(0), keypoints[labelled, :2].max(0)
        np.testing.assert_allclose(bbox[i], [*lo, *(hi - lo)], rtol=1e-6)
        # the crop's scale: the crop side over the padded box side
        scale = SIZE / (max(hi - lo) * BOX_PADDING)
        frame, crop = _crop_camera(bbox[i], intrinsics[i])
        expected = _to_crop(frame, crop, keypoints[labelled, :2])
        # float32 pixels of a 64 px crop: ~1e-5 px; the tolerance stays far below a half-pixel shift
        np.testing.assert_allclose(pose2d[i][labelled], expected, atol=1e-4 * SIZE)
        # a similarity up to the slight perspective of the assumed 8 degree field of view (~0.05 px here):
        # distances scale by SIZE / side
        d_planted = np.linalg.norm(keypoints[labelled, None, :2] - keypoints[None, labelled, :2], axis=-1)
        d_stored = np.linalg.norm(pose2d[i][labelled][:, None] - pose2d[i][labelled][None], axis=-1)
        np.testing.assert_allclose(d_stored, d_planted * scale, atol=2e-3 * SIZE)


def test_unlabelled_keypoints_are_nan_never_the_top_left_pixel(converted, pristine):
    """Pitfall: v=0 keypoints are stored as (0, 0) in the file."""
    options = resolve_options(coco, None)
    examples = {e.subject: e for e in coco.read_examples(pristine, options)}
    left = examples["val2017/101"]
    assert np.isnan(left.pose2d[J["left_ear"]]).all()
    assert np.isfinite(np.delete(left.pose2d, J["left_ear"], axis=0)).all()
    assert left.world_known is False and left.assumed_camera is True and left.pose3d is None
    np.testing.assert_allclose(left.frame_camera.K, assumed_camera(W, H).K)
    store = open_store(converted.path)
    subjects = _names(store, "subject")
    i = subjects.index("val2017/101")
    assert not store.load("joint_valid")[i, J["left_ear"]]
    assert np.isnan(store.load("pose2d")[i, J["left_ear"]]).all()
    # had (0, 0) counted as a joint, the person box would reach the image corner
    assert store.load("bbox")[i][0] == 24 - 10 and store.load("bbox")[i][1] == 8 + 2
    # every unlabelled joint of every example is invalid, and no valid joint sits at the frame's (0, 0)
    planted = planted_by_subject()
    for k, subject in enumerate(subjects):
        np.testing.assert_array_equal(store.load("joint_valid")[k], planted[subject][0][:, 2] > 0)


def test_occluded_keypoints_are_labels(converted):
    """v=1 (labelled, not visible) is a label as v=2 is."""
    store = open_store(converted.path)
    subjects, valid = _names(store, "subject"), store.load("joint_valid")
    planted = planted_by_subject()
    for subject, joint in (("val2017/101", "right_ankle"), ("val2017/201", "left_wrist"),
                           ("val2017/201", "left_knee"), ("train2017/302", "right_eye")):
        assert planted[subject][0][J[joint], 2] == 1
        assert valid[subjects.index(subject), J[joint]]
        assert np.isfinite(store.load("pose2d")[subjects.index(subject), J[joint]]).all()


def test_crowd_and_keypointless_annotations_are_skipped(converted):
    store = open_store(converted.path)
    subjects = set(_names(store, "subject"))
    assert subjects == {f"val2017/{a}" for a in KEPT["val"]} | {f"train2017/{a}" for a in KEPT["train"]}
    assert not any(s.endswith(f"/{a}") for s in subjects for a in SKIPPED)
    # image 872 keeps its one person with keypoints beside the crowd and the keypoint-less annotation
    assert _names(store, "sequence").count("val2017/872") == 1


def test_two_people_in_one_image_give_two_crops_each_centred_on_its_person(converted):
    store = open_store(converted.path)
    sequences, subjects = _names(store, "sequence"), _names(store, "subject")
    members = [i for i, s in enumerate(sequences) if s == f"val2017/{TWO_PEOPLE}"]
    assert sorted(subjects[i] for i in members) == ["val2017/101", "val2017/102"]
    pose2d, valid = store.load("pose2d").astype(np.float64), store.load("joint_valid")
    bbox, intrinsics = store.load("bbox").astype(np.float64), store.load("intrinsics").astype(np.float64)
    planted = planted_by_subject()
    centre = (SIZE - 1) / 2
    for i in members:
        keypoints = planted[subjects[i]][0]
        labelled = keypoints[:, 2] > 0
        lo, hi = keypoints[labelled, :2].min(0), keypoints[labelled, :2].max(0)
        frame, crop = _crop_camera(bbox[i], intrinsics[i])
        # the centre of this person's box lands on the crop's centre pixel
        np.testing.assert_allclose(_to_crop(frame, crop, ((lo + hi) / 2)[None]), [[centre, centre]], atol=1e-6)
        stored = pose2d[i][valid[i]]
        np.testing.assert_allclose((stored.min(0) + stored.max(0)) / 2, [centre, centre], atol=0.05 * SIZE)
        # the other person's joints fall outside this crop
        other = next(s for s in ("val2017/101", "val2017/102") if s != subjects[i])
        other_kp = planted[other][0]
        other_uv = _to_crop(frame, crop, other_kp[other_kp[:, 2] > 0, :2])
        assert np.all((other_uv[:, 0] < -0.5) | (other_uv[:, 0] > SIZE - 0.5))


def test_an_image_without_person_annotations_gives_nothing(converted):
    store = open_store(converted.path)
    assert "val2017/1000" not in store.attrs["codes"]["sequence"]
    assert set(store.attrs["codes"]["sequence"]) == {"val2017/785", "val2017/872", "train2017/9", "train2017/25"}


def test_integer_keypoints_are_pixel_centres_in_the_crop(converted):
    """A blob centred on the planted integer pixel of one joint is centred on the stored 2D label in the crop:
    the keypoints are used as pixel indices (no half-pixel shift either way)."""
    store = open_store(converted.path)
    i = _names(store, "subject").index(f"val2017/{BLOB_ANNOTATION}")
    image = store.load("image")[i].astype(np.float64).mean(axis=-1)
    u, v = store.load("pose2d")[i, BLOB_JOINT].astype(np.float64)
    bbox = store.load("bbox")[i].astype(np.float64)
    scale = SIZE / (max(bbox[2:]) * BOX_PADDING)
    r = int(np.ceil(4 * 1.5 * scale))
    y0, x0 = int(round(v)) - r, int(round(u)) - r
    window = image[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1]
    weights = np.clip(window - 0.1 * window.max(), 0, None)
    yy, xx = np.mgrid[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1]
    centroid = np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()
    # half a frame pixel would be 0.5 * scale (~0.6) crop pixels; JPEG and resampling move it ~0.01
    np.testing.assert_allclose(centroid, [u, v], atol=0.1 * scale)


def test_quality_checks_pass_on_the_clean_store(converted):
    outcomes = run_store_checks(converted.path)
    failed = {o.name: o.description for o in outcomes if not o.passed}
    assert not failed


# -- options -------------------------------------------------------------------------------------------
def test_frame_step_counts_annotations_in_file_order(pristine, tmp_path):
    result = convert(coco, pristine, tmp_path / "coco.zarr", image_size=16, options={"frame_step": 2})
    store = open_store(result.path)
    # file positions 0, 2, 4 of each file: val 101 (0), crowd (2), 102 (4); train 301 (0), crowd (2)
    assert sorted(_names(store, "subject")) == ["train2017/301", "val2017/101", "val2017/102"]
    assert set(store.load("frame").tolist()) == {0, 4}


def test_splits_and_min_keypoints_options(pristine, tmp_path):
    result = convert(coco, pristine, tmp_path / "val.zarr", image_size=16, options={"splits": ["val"]})
    assert result.counts == {"train": 0, "val": 3, "test": 0}
    # labelled (v > 0) keypoints: 301 and 302 (one occluded) 17, 101, 102 and 201 16, 303 15
    result = convert(coco, pristine, tmp_path / "all17.zarr", image_size=16, options={"min_keypoints": 17})
    assert sorted(_names(open_store(result.path), "subject")) == ["train2017/301", "train2017/302"]
    result = convert(coco, pristine, tmp_path / "16.zarr", image_size=16, options={"min_keypoints": 16})
    assert "train2017/303" not in _names(open_store(result.path), "subject") and result.num_examples == 5
    for option, value in (("splits", ["test"]), ("splits", []), ("min_keypoints", 0), ("min_keypoints", 18),
                          ("year", 2018), ("year", "latest"), ("year", True)):
        with pytest.raises(OptionError, match=option):
            convert(coco, pristine, tmp_path / "bad.zarr", image_size=16, options={option: value})


def test_the_2014_file_names(tmp_path):
    only_2014 = write_raw_tree(tmp_path / "coco2014", year=2014)
    result = convert(coco, only_2014, tmp_path / "c2014.zarr", image_size=16)
    store = open_store(result.path)
    assert result.counts == {"train": 3, "val": 3, "test": 0}
    assert set(_names(store, "sequence")) == {"val2014/785", "val2014/872", "train2014/9", "train2014/25"}
    assert store.attrs["converter_options"]["year"] == "auto"
    examples = list(coco.read_examples(only_2014, resolve_options(coco, None)))
    assert {e.image_path.parent.name for e in examples} == {"train2014", "val2014"}
    assert all(e.image_path.name.startswith(f"COCO_{e.image_path.parent.name}_") for e in examples)
    # asking for 2017 where only 2014 is present names the 2017 file
    with pytest.raises(RawDataError) as info:
        convert(coco, only_2014, tmp_path / "x.zarr", image_size=16, options={"year": 2017})
    assert info.value.path == only_2014 / "annotations" / "person_keypoints_train2017.json"

    both = write_raw_tree(write_raw_tree(tmp_path / "both", year=2014), year=2017)
    auto = open_store(convert(coco, both, tmp_path / "auto.zarr", image_size=16).path)
    assert all(s.startswith(("train2017/", "val2017/")) for s in _names(auto, "sequence"))
    chosen = open_store(convert(coco, both, tmp_path / "y2014.zarr", image_size=16, options={"year": "2014"}).path)
    assert all(s.startswith(("train2014/", "val2014/")) for s in _names(chosen, "sequence"))


def test_image_folders_under_images_are_accepted(raw, tmp_path):
    (raw / "images").mkdir()
    for split in ("train", "val"):
        shutil.move(raw / f"{split}2017", raw / "images" / f"{split}2017")
    result = convert(coco, raw, tmp_path / "c.zarr", image_size=16)
    assert result.num_examples == 6


# -- bad input -----------------------------------------------------------------------------------------
def _json_path(root: Path, split: str = "val") -> Path:
    return root / "annotations" / f"person_keypoints_{split}2017.json"


def _edit(root: Path, change, split: str = "val") -> Path:
    path = _json_path(root, split)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def _ann(data: dict, ann_id: int) -> dict:
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def _position(ann_id: int, split: str = "val") -> int:
    return [a["id"] for a in planted_annotations(split)].index(ann_id)


def _bad_cases():
    def keypoints_of_the_wrong_length(root):
        path = _edit(root, lambda d: _ann(d, 201).__setitem__("keypoints", _ann(d, 201)["keypoints"][:-3]))
        return path, f"annotations[{_position(201)}].keypoints"

    def keypoints_as_x_y_pairs(root):
        def change(d):
            kp = _ann(d, 102)["keypoints"]
            _ann(d, 102)["keypoints"] = [kp[k] for k in range(len(kp)) if k % 3 != 2]
        return _edit(root, change), f"annotations[{_position(102)}].keypoints"

    def visibility_flag_out_of_range(root):
        path = _edit(root, lambda d: _ann(d, 101)["keypoints"].__setitem__(5, 3))
        return path, f"annotations[{_position(101)}].keypoints"

    def keypoint_not_a_number(root):
        path = _edit(root, lambda d: _ann(d, 101)["keypoints"].__setitem__(3, "12"))
        return path, f"annotations[{_position(101)}].keypoints"

    def image_id_not_in_images(root):
        path = _edit(root, lambda d: _ann(d, 102).__setitem__("image_id", 99999))
        return path, f"annotations[{_position(102)}].image_id"

    def missing_image_file(root):
        path = root / "val2017" / image_name("val", 2017, 872)
        path.unlink()
        return path, "images[1].file_name"

    def missing_image_folder(root):
        path = root / "train2017"
        shutil.rmtree(path)
        return path, None

    def image_size_differs_from_the_json(root):
        path = root / "train2017" / image_name("train", 2017, 25)
        Image.new("RGB", (H, W)).save(path)  # portrait where the JSON says landscape
        return path, "images[1].width/height"

    def truncated_image(root):
        path = root / "val2017" / image_name("val", 2017, 872)
        path.write_bytes(path.read_bytes()[:300])
        return path, None

    def missing_json(root):
        path = _json_path(root, "train")
        path.unlink()
        return path, None

    def truncated_json(root):
        path = _json_path(root)
        path.write_text(path.read_text()[:500])
        return path, None

    def json_not_an_object(root):
        path = _json_path(root)
        path.write_text("[]")
        return path, None

    def keypoint_names_in_another_order(root):
        def change(d):
            names = d["categories"][0]["keypoints"]
            names[1], names[2] = names[2], names[1]
        return _edit(root, change), "categories[0].keypoints"

    def keypoint_names_of_another_skeleton(root):
        return _edit(root, lambda d: d["categories"][0].__setitem__("keypoints", KEYPOINT_NAMES[:14])), \
            "categories[0].keypoints"

    def no_person_category(root):
        return _edit(root, lambda d: d["categories"][0].__setitem__("name", "people")), "categories"

    def missing_annotations(root):
        return _edit(root, lambda d: d.pop("annotations")), "annotations"

    def missing_images(root):
        return _edit(root, lambda d: d.pop("images")), "images"

    def missing_iscrowd(root):
        return _edit(root, lambda d: _ann(d, 201).pop("iscrowd")), f"annotations[{_position(201)}].iscrowd"

    def missing_image_size(root):
        return _edit(root, lambda d: d["images"][0].pop("width"), "train"), "images[0].width"

    def duplicate_image_id(root):
        return _edit(root, lambda d: d["images"][2].__setitem__("id", 785)), "images[2].id"

    found = dict(locals())
    return {name: fn for name, fn in found.items() if callable(fn)}


@pytest.fixture(scope="module")
def clean_store(pristine, tmp_path_factory) -> Path:
    """A store published from the clean tree, copied into each bad-input test's folder."""
    out = tmp_path_factory.mktemp("coco_clean") / "coco.zarr"
    convert(coco, pristine, out, image_size=16)
    return out


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_bad_input_names_file_and_field_and_keeps_the_published_store(raw, clean_store, tmp_path, case):
    store_path = tmp_path / "coco.zarr"
    shutil.copytree(clean_store, store_path, symlinks=True)
    assert open_store(store_path).attrs["raw_fingerprint"]
    damaged, field = _bad_cases()[case](raw)
    error = assert_refused_keeping_the_store(lambda: convert(coco, raw, store_path, image_size=16), store_path,
                                             damaged, repr(field) if field else None)
    assert error.path == damaged and error.field == field
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("coco")) == ["coco.zarr"]

