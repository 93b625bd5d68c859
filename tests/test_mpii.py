"""The mpii converter on a tiny raw tree in the real MPII Human Pose layout (docs/converters/mpii.md).

The tree is written as the release is: ``mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat`` (MATLAB v5
through ``scipy.io.savemat``, ``RELEASE`` a struct whose ``annolist`` is a 1xN struct array, 1x1 struct arrays
where an image has one person or a person one point, so that ``loadmat(squeeze_me=True)`` squeezes them as it
does the real file's) and ``images/<name>.jpg``. Coordinates are written MATLAB-style (1-based). Each image is
black with a white 3x3 square centred on every annotated joint, so a crop shows where a label really is.
"""

import copy
import inspect
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
from assets.store import open_store
from converter_checks import assert_refused_keeping_the_store

scipy_io = pytest.importorskip("scipy.io")

mpii = get_converter("mpii")

W, H = 96, 64  # the release's images are ~1280x720 JPEGs
CROP = 64
MAT = Path("mpii_human_pose_v1_u12_2") / "mpii_human_pose_v1_u12_1.mat"
# a standing person, 0-based pixel offsets of MPII's 16 point ids from the head top (every two >= 6 px apart)
TEMPLATE = np.array([
    [-6, 43], [-6, 35], [-6, 27], [6, 27], [6, 35], [6, 43],  # r ankle, r knee, r hip, l hip, l knee, l ankle
    [0, 21], [0, 13], [0, 7], [0, 0],  # pelvis, thorax, upper neck, head top
    [-14, 26], [-12, 19], [-7, 13], [7, 13], [12, 19], [14, 26],  # r wrist, r elbow, r shoulder, l sho, l elb, l wri
], dtype=np.float64)
TOP = 10  # head-top row (0-based) of every person
EMPTY = np.zeros((0, 0))  # MATLAB's [] as savemat writes it
ONE_POINT = (80.0, 20.0)  # 0-based head top of the person annotated with one point


def person(x0: float, ids=range(16), visible=None, dtype=np.float64) -> list[dict]:
    """Points of one person with head top at 0-based (x0, TOP), as MATLAB 1-based x, y."""
    points = []
    for n, j in enumerate(ids):
        x, y = TEMPLATE[j] + [x0, TOP] + 1.0
        point = {"id": j, "x": dtype(x), "y": dtype(y)}
        if visible is not None:
            point["is_visible"] = visible[n % len(visible)]
        points.append(point)
    return points


def planted_images() -> list[dict]:
    """annolist in order: name, img_train, rects (a list of point lists; None = a rect without annopoints)."""
    absent = (0, 1, 4, 5)  # ankles and knees not annotated
    return [
        {"name": "015601864.jpg", "train": 1, "video": 3,
         "rects": [person(20, visible=[1, 1, 0]),  # is_visible numeric
                   person(70, visible=["1", "0"], dtype=np.uint16)]},  # strings; unsigned integer pixels
        {"name": "015599452.jpg", "train": 0, "video": 3, "test_rects": 2},  # a test image: scale/objpos only
        {"name": "005808361.jpg", "train": 1, "video": 7,  # ONE person: annorect squeezes to a bare struct
         "rects": [person(48, ids=[j for j in range(16) if j not in absent], visible=[EMPTY, "", 0, "1"])]},
        {"name": "052475643.jpg", "train": 1, "video": None,
         "rects": [person(24, visible=[1]),  # its r wrist is at MATLAB x = 11, pixel 10
                   None,  # an unannotated rect of a training image (annopoints = [])
                   [{"id": 9, "x": ONE_POINT[0] + 1, "y": ONE_POINT[1] + 1, "is_visible": 1}]]},  # ONE point
        {"name": "060111501.jpg", "train": 1, "video": None, "rects": []},  # annorect = []
        {"name": "070000001.jpg", "train": 1, "video": 12, "rects": [person(40, visible=["1"])]},
        {"name": "099999999.jpg", "train": 0, "video": None, "test_rects": 1},  # one test rect: squeezed
    ]


# (annolist index, rect index) of every expected example, in order
EXPECTED = [(0, 0), (0, 1), (2, 0), (3, 0), (3, 2), (5, 0)]


def planted_uv(image: dict, rect: int) -> np.ndarray:
    """[16, 2] 0-based pixels of a planted person (NaN where not annotated)."""
    uv = np.full((16, 2), np.nan)
    for point in image["rects"][rect]:
        uv[point["id"]] = (float(point["x"]) - 1, float(point["y"]) - 1)
    return uv


# -- writing the release ---------------------------------------------------------------------------
def struct_array(records: list[dict], fields: list[str]) -> np.ndarray:
    """A MATLAB 1xN struct array for savemat; a field a record lacks is [] as in MATLAB."""
    array = np.empty((1, len(records)), dtype=[(f, object) for f in fields])
    for n, record in enumerate(records):
        for f in fields:
            array[0, n][f] = record.get(f, EMPTY)
    return array


def _rect(points, n: int) -> dict:
    rect = {"scale": 1.5 + 0.1 * n, "objpos": {"x": 40.0, "y": 30.0}}
    if points is None:
        return rect
    fields = [f for f in ("x", "y", "id", "is_visible") if any(f in p for p in points)]
    head = [(float(p["x"]), float(p["y"])) for p in points if p["id"] == 9 and "x" in p]
    x, y = head[0] if head else (0.0, 0.0)
    return {**rect, "x1": x - 4, "y1": y, "x2": x + 4, "y2": y + 8,
            "annopoints": {"point": struct_array(points, fields)}}


def release_struct(images: list[dict]) -> dict:
    annolist, single_person = [], np.empty((len(images), 1), dtype=object)
    for i, image in enumerate(images):
        if "test_rects" in image:
            rects = struct_array([{"scale": 2.0, "objpos": {"x": 30.0, "y": 30.0}}] * image["test_rects"],
                                 ["scale", "objpos"])
        elif image["rects"]:
            rects = struct_array([_rect(points, n) for n, points in enumerate(image["rects"])],
                                 ["x1", "y1", "x2", "y2", "annopoints", "scale", "objpos"])
        else:
            rects = EMPTY
        video = image.get("video")
        annolist.append({"image": {"name": image["name"]}, "annorect": rects,
                         "frame_sec": EMPTY if video is None else 10.0 + i,
                         "vididx": EMPTY if video is None else video})
        single_person[i, 0] = np.array([[1.0]]) if image.get("rects") else EMPTY
    return {
        "annolist": struct_array(annolist, ["image", "annorect", "frame_sec", "vididx"]),
        "img_train": np.array([[float(image["train"]) for image in images]]),
        "version": "12",
        "single_person": single_person,
        "act": struct_array([{"cat_name": "sports", "act_name": "running", "act_id": 1}] * len(images),
                            ["cat_name", "act_name", "act_id"]).T,
        "video_list": np.array([[f"vid{v:03d}" for v in range(1, 13)]], dtype=object),
    }


def write_annotations(root: Path, images: list[dict], variable: str = "RELEASE", path: Path | None = None) -> Path:
    path = path or root / MAT
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(path, {variable: release_struct(images)})
    return path


def marker_image(images: list[dict], i: int) -> np.ndarray:
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    for points in images[i].get("rects", []):
        for point in points or []:
            x, y = int(round(float(point["x"]) - 1)), int(round(float(point["y"]) - 1))
            pixels[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = 255
    return pixels


def write_raw_tree(root: Path) -> Path:
    images = planted_images()
    write_annotations(root, images)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(marker_image(images, i)).save(root / "images" / image["name"], quality=95)
    return root


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_raw_tree(tmp_path_factory.mktemp("mpii") / "mpii")


@pytest.fixture(scope="module")
def converted(pristine, tmp_path_factory):
    return convert(mpii, pristine, tmp_path_factory.mktemp("mpii_store") / "mpii.zarr", image_size=CROP)


def examples(root: Path, options=None) -> list:
    return list(mpii.read_examples(root, resolve_options(mpii, options)))


def _names(store, key: str) -> list[str]:
    return [store.attrs["codes"][key][c] for c in store.load(key)]


# -- the planted file is shaped like the real one --------------------------------------------------
def test_registered_with_the_declared_protocol():
    assert get_converter("mpii") is mpii
    assert (mpii.NAME, mpii.SKELETON, mpii.CAMERAS, mpii.DEFAULT_FRAME_STEP) == ("mpii", "mpii_16", (), 1)
    options = resolve_options(mpii, None)
    assert options.frame_step == 1 and options.cameras == () and options.extra == {"min_points": 1}
    with pytest.raises(OptionError, match="no camera choice"):
        resolve_options(mpii, {"cameras": ["unknown"]})
    with pytest.raises(OptionError, match="not an option"):
        resolve_options(mpii, {"val_every": 10})
    assert inspect.isgenerator(mpii.read_examples(Path("/nonexistent"), options))  # lazy: nothing read yet


def test_the_planted_file_loads_like_the_release(pristine):
    """Pitfall: squeeze_me turns 1-element struct arrays into bare structs; is_visible comes in three forms."""
    release = scipy_io.loadmat(pristine / MAT, struct_as_record=False, squeeze_me=True)["RELEASE"]
    annolist = release.annolist
    assert isinstance(annolist, np.ndarray) and annolist.shape == (7,) and release.img_train.shape == (7,)
    assert annolist[0].image.name == "015601864.jpg" and annolist[0].annorect.shape == (2,)
    assert hasattr(annolist[2].annorect, "_fieldnames")  # one person: a bare struct, not an array
    assert hasattr(annolist[3].annorect[2].annopoints.point, "_fieldnames")  # one point: a bare struct
    assert isinstance(annolist[3].annorect[1].annopoints, np.ndarray) and annolist[3].annorect[1].annopoints.size == 0
    assert annolist[4].annorect.size == 0
    assert "annopoints" not in annolist[1].annorect[0]._fieldnames  # test images: scale/objpos only
    assert hasattr(annolist[6].annorect, "_fieldnames")
    visibility = [p.is_visible for p in annolist[0].annorect[1].annopoints.point[:2]]
    assert visibility == ["1", "0"]  # strings
    assert [int(p.is_visible) for p in annolist[0].annorect[0].annopoints.point[:3]] == [1, 1, 0]  # numbers
    empties = [p.is_visible for p in annolist[2].annorect.annopoints.point[:2]]
    assert all(isinstance(v, np.ndarray) and v.size == 0 for v in empties)  # [] and '' load as empty arrays
    assert annolist[0].vididx == 3 and isinstance(annolist[3].vididx, np.ndarray)


# -- what is read --------------------------------------------------------------------------------
def test_examples_are_the_annotated_people_of_training_images(pristine):
    """Test images, rects without annopoints and images without people give no example; every annotated
    person of a training image gives one."""
    found = examples(pristine)
    images = planted_images()
    assert [(ex.frame, ex.subject) for ex in found] == [(i, f"{images[i]['name']}/{r}") for i, r in EXPECTED]
    for ex in found:
        assert ex.split == "train" and ex.camera == "unknown" and ex.pose3d is None and ex.confidence is None
        assert ex.world_known is False and ex.assumed_camera is True and ex.crop_box is None
        assert ex.image_path == pristine / "images" / images[ex.frame]["name"]
        np.testing.assert_array_equal(ex.frame_camera.K, assumed_camera(W, H).K)  # the size from the image file
        assert ex.pose2d.shape == (16, 2)
    assert [ex.sequence for ex in found] == ["video00003", "video00003", "video00007", "images", "images",
                                             "video00012"]


def test_coordinates_are_shifted_from_matlab_1_based_pixels(pristine):
    """Pitfall: MPII's pixels are 1-based; a point at MATLAB x = 11 is pixel 10 (unsigned ints included)."""
    found = {(ex.frame, int(ex.subject.rsplit("/", 1)[1])): ex for ex in examples(pristine)}
    images = planted_images()
    wrist = found[(3, 0)].pose2d[10]
    assert images[3]["rects"][0][10]["x"] == 11.0 and wrist[0] == 10.0
    for (i, r), ex in found.items():
        np.testing.assert_array_equal(ex.pose2d, planted_uv(images[i], r))
    unsigned = images[0]["rects"][1]
    assert unsigned[0]["x"].dtype == np.uint16
    np.testing.assert_array_equal(found[(0, 1)].pose2d[0], [unsigned[0]["x"] - 1.0, unsigned[0]["y"] - 1.0])


def test_absent_points_are_unlabelled_and_any_visibility_is_a_label(pristine):
    """Joints missing from point are NaN; is_visible 0, '0', [] and '' all mark labelled points."""
    found = {(ex.frame, ex.subject.rsplit("/", 1)[1]): ex for ex in examples(pristine)}
    partial = found[(2, "0")].pose2d
    assert np.isnan(partial[[0, 1, 4, 5]]).all()
    assert np.isfinite(np.delete(partial, [0, 1, 4, 5], axis=0)).all()
    assert np.isfinite(found[(0, "0")].pose2d).all()  # numeric, a third of them 0
    assert np.isfinite(found[(0, "1")].pose2d).all()  # strings, half of them '0'


def test_a_person_with_one_point(pristine):
    """Pitfall: a one-point annopoints.point is a bare struct after squeeze_me."""
    ex = [e for e in examples(pristine) if e.frame == 3 and e.subject.endswith("/2")][0]
    labelled = np.isfinite(ex.pose2d).all(axis=-1)
    assert labelled.sum() == 1 and labelled[9]
    np.testing.assert_array_equal(ex.pose2d[9], ONE_POINT)


def test_an_image_with_one_person(pristine):
    """Pitfall: a one-person annorect is a bare struct after squeeze_me."""
    found = [ex for ex in examples(pristine) if ex.frame in (2, 5)]
    assert [(ex.frame, ex.subject) for ex in found] == [(2, "005808361.jpg/0"), (5, "070000001.jpg/0")]


def test_the_mat_file_at_the_root_is_accepted(raw):
    """PosePile's download script unzips with -j: the .mat then lies at the raw root."""
    (raw / MAT).rename(raw / MAT.name)
    (raw / MAT.parent).rmdir()
    assert len(examples(raw)) == len(EXPECTED)


def test_image_size_comes_from_the_header_only(raw, tmp_path):
    """The frame camera needs only the image header: a truncated file still parses, and fails when decoded."""
    path = raw / "images" / planted_images()[5]["name"]
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\xff\xda") + 40])  # the header up to the first scan, few pixels
    found = [ex for ex in examples(raw) if ex.frame == 5]
    np.testing.assert_array_equal(found[0].frame_camera.K, assumed_camera(W, H).K)
    with pytest.raises(RawDataError) as info:
        convert(mpii, raw, tmp_path / "mpii.zarr", image_size=16)
    assert info.value.path == path


# -- what is written -------------------------------------------------------------------------------
def _crop_camera(uv: np.ndarray, focal: float):
    """The virtual crop camera of a person (labelled 0-based pixels uv): looking at the centre of their box."""
    frame = assumed_camera(W, H)
    ok = np.isfinite(uv).all(axis=-1)
    lo, hi = uv[ok].min(axis=0), uv[ok].max(axis=0)
    centre = np.append(frame.image_to_normalized((lo + hi) / 2), 1.0)
    return frame, frame.looking_at(centre, focal, CROP), hi - lo


def test_planted_joints_come_back_through_the_crop(converted):
    store = open_store(converted.path)
    assert converted.counts == {"train": len(EXPECTED), "val": 0, "test": 0}
    assert store.attrs["intrinsics_assumed"] is True and store.attrs["has_pose3d"] is False
    pose2d, intrinsics = store.load("pose2d").astype(np.float64), store.load("intrinsics").astype(np.float64)
    valid, frames = store.load("joint_valid"), store.load("frame")
    assert np.isnan(store.load("pose3d")).all() and np.isnan(store.load("extrinsics")).all()
    images = planted_images()
    subjects = _names(store, "subject")
    for n, (i, r) in enumerate(EXPECTED):
        assert (frames[n], subjects[n]) == (i, f"{images[i]['name']}/{r}")
        uv = planted_uv(images[i], r)
        labelled = np.isfinite(uv).all(axis=-1)
        np.testing.assert_array_equal(valid[n], labelled)
        assert np.isnan(pose2d[n][~labelled]).all()
        frame, virtual, size = _crop_camera(uv, intrinsics[n][0, 0])
        np.testing.assert_allclose(intrinsics[n], virtual.K, rtol=1e-6)
        if labelled.sum() > 1:  # the crop spans the padded box: its focal is the frame's times the zoom
            zoom = CROP / (BOX_PADDING * size.max())
            np.testing.assert_allclose(intrinsics[n][0, 0], frame.K[0, 0] * zoom, rtol=2e-3)
        rays = np.concatenate([frame.image_to_normalized(uv[labelled]), np.ones((labelled.sum(), 1))], axis=-1)
        expected = virtual.camera_to_image(rays @ virtual.R.T)
        np.testing.assert_allclose(pose2d[n][labelled], expected, atol=1e-5 * CROP)


def test_the_crop_shows_each_joint_where_its_label_is(converted):
    """The white marker planted at each 0-based joint pixel is centred on the stored label in the crop: a
    1-based label (off by one frame pixel, more than one crop pixel here) would miss it."""
    store = open_store(converted.path)
    pose2d, intrinsics, crops = store.load("pose2d"), store.load("intrinsics"), store.load("image")
    checked = 0
    for n, (i, r) in enumerate(EXPECTED):
        labelled = np.isfinite(pose2d[n]).all(axis=-1)
        if labelled.sum() < 2:
            continue  # the one-point person's crop is a 1.3 px window magnified: the marker fills it
        assert intrinsics[n][0, 0] / assumed_camera(W, H).K[0, 0] > 1.0  # one frame pixel > one crop pixel
        gray = crops[n].astype(np.float64).mean(axis=-1)
        v, u = np.mgrid[0:CROP, 0:CROP]
        for j in np.flatnonzero(labelled):
            x, y = pose2d[n][j]
            near = (np.abs(u - x) <= 3) & (np.abs(v - y) <= 3)
            weight = np.where(near, np.clip(gray - 40, 0, None), 0)
            assert weight.sum() > 0, (i, r, j)
            centroid = np.array([(weight * u).sum(), (weight * v).sum()]) / weight.sum()
            assert np.linalg.norm(centroid - (x, y)) < 0.35, (i, r, j, centroid, (x, y))
            checked += 1
    assert checked == 16 + 16 + 12 + 16 + 16


def test_quality_checks_pass_on_the_clean_store(converted):
    outcomes = run_store_checks(converted.path)
    failed = {o.name: o.description for o in outcomes if not o.passed}
    assert not failed


def test_frame_step_counts_annolist_images(pristine, tmp_path):
    result = convert(mpii, pristine, tmp_path / "mpii.zarr", image_size=16, options={"frame_step": 3})
    assert sorted(set(open_store(result.path).load("frame").tolist())) == [0, 3]
    assert result.num_examples == 4  # image 0: two people, image 3: two annotated people
    assert [ex.frame for ex in examples(pristine, {"frame_step": 2})] == [0, 0, 2]


def test_min_points_skips_sparsely_annotated_people(pristine):
    found = examples(pristine, {"min_points": 13})
    assert [(ex.frame, ex.subject.rsplit("/", 1)[1]) for ex in found] == [(0, "0"), (0, "1"), (3, "0"), (5, "0")]
    for bad in (0, 17, True, "2"):
        with pytest.raises(OptionError, match="min_points"):
            examples(pristine, {"min_points": bad})


# -- bad input -------------------------------------------------------------------------------------
def _rewrite(root: Path, change) -> Path:
    images = copy.deepcopy(planted_images())
    change(images)
    return write_annotations(root, images)


def _point(images, i, r, p) -> dict:
    return images[i]["rects"][r][p]


def _bad_cases() -> dict:
    point = "RELEASE.annolist(4).annorect(1).annopoints.point(3)"

    def joint_id_16(root):
        return _rewrite(root, lambda im: _point(im, 3, 0, 2).__setitem__("id", 16)), f"{point}.id"

    def joint_id_negative(root):
        return _rewrite(root, lambda im: _point(im, 3, 0, 2).__setitem__("id", -1)), f"{point}.id"

    def joint_id_repeated(root):
        return _rewrite(root, lambda im: _point(im, 3, 0, 2).__setitem__("id", 0)), f"{point}.id"

    def joint_id_fractional(root):
        return _rewrite(root, lambda im: _point(im, 3, 0, 2).__setitem__("id", 2.5)), f"{point}.id"

    def coordinate_not_finite(root):
        return _rewrite(root, lambda im: _point(im, 3, 0, 2).__setitem__("x", np.nan)), f"{point}.x"

    def coordinate_text(root):
        return _rewrite(root, lambda im: _point(im, 3, 0, 2).__setitem__("y", "12")), f"{point}.y"

    def visibility_unknown(root):
        return _rewrite(root, lambda im: _point(im, 3, 0, 2).__setitem__("is_visible", "v")), f"{point}.is_visible"

    def point_without_x(root):
        def change(images):
            for p in images[3]["rects"][0]:
                del p["x"]
        return _rewrite(root, change), "RELEASE.annolist(4).annorect(1).annopoints.point(1).x"

    def missing_release_variable(root):
        path = root / MAT
        write_annotations(root, planted_images(), variable="annolist")
        return path, "RELEASE"

    def img_train_too_short(root):
        path = root / MAT
        mat = {"RELEASE": release_struct(planted_images())}
        mat["RELEASE"]["img_train"] = mat["RELEASE"]["img_train"][:, :-1]
        scipy_io.savemat(path, mat)
        return path, "RELEASE.img_train"

    def img_train_flag_2(root):
        return _rewrite(root, lambda im: im[4].__setitem__("train", 2)), "RELEASE.img_train"

    def image_name_with_a_folder(root):
        return _rewrite(root, lambda im: im[5].__setitem__("name", "../070000001.jpg")), \
            "RELEASE.annolist(6).image.name"

    def missing_image(root):
        path = root / "images" / planted_images()[3]["name"]
        path.unlink()
        return path, "RELEASE.annolist(4).image.name"

    def unreadable_image(root):
        path = root / "images" / planted_images()[0]["name"]
        path.write_bytes(b"not a jpeg")
        return path, "RELEASE.annolist(1).image.name"

    def missing_annotation_file(root):
        path = root / MAT
        path.unlink()
        return path, None

    def truncated_annotation_file(root):
        path = root / MAT
        path.write_bytes(path.read_bytes()[:300])
        return path, None

    found = dict(locals())
    return {name: fn for name, fn in found.items() if callable(fn)}


@pytest.mark.parametrize("case", sorted(_bad_cases()))
def test_bad_input_names_file_and_field_and_keeps_the_published_store(raw, tmp_path, case):
    store_path = tmp_path / "mpii.zarr"
    convert(mpii, raw, store_path, image_size=16)
    damaged, field = _bad_cases()[case](raw)
    error = assert_refused_keeping_the_store(lambda: convert(mpii, raw, store_path, image_size=16), store_path,
                                             damaged, repr(field) if field else None)
    assert error.path == damaged and error.field == field
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("mpii")) == ["mpii.zarr"]
