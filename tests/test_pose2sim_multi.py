"""The multi-person Pose2Sim recording: crops, its raw layout and converter, and the real build on a few frames."""

import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from assets.cameras import Camera, bilinear_sample
from assets.converters import get_converter, pose2sim_multi
from assets.converters.common import convert
from assets.converters.raw_io import RawDataError
from assets.pseudo_gt import triangulate_store
from assets.real.blazepose import BLAZEPOSE_33
from assets.real.cache import POSE2SIM_WHEEL, AcquisitionError, mediapipe_model, pose2sim_wheel
from assets.real.pose2sim_multi import (ASSOCIATION_JOINTS, MultiPersonSettings, build, crop_image, pyramid_down,
                                        seed_roi)
from assets.store import open_store

# -- crops ------------------------------------------------------------------------------------------------------


def _pyramid_reference(image: np.ndarray) -> np.ndarray:
    """OpenCV's pyrDown, written out: binomial filter with reflect-101 borders, even pixels, rounded."""
    kernel = np.array([1, 4, 6, 4, 1], dtype=np.float64)
    height, width = image.shape[:2]
    padded = np.pad(image.astype(np.float64), ((2, 2), (2, 2), (0, 0)), mode="reflect")
    vertical = sum(k * padded[i:i + height] for i, k in enumerate(kernel))
    both = sum(k * vertical[:, i:i + width] for i, k in enumerate(kernel))
    return np.floor(both[::2, ::2] / 256 + 0.5)


@pytest.mark.parametrize("shape", [(3, 3, 3), (4, 7, 3), (9, 8, 3), (61, 47, 3)])
def test_pyramid_level_matches_opencvs_definition(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    down = pyramid_down(image)
    assert down.dtype == np.uint8 and down.shape == ((shape[0] + 1) // 2, (shape[1] + 1) // 2, 3)
    np.testing.assert_array_equal(down, _pyramid_reference(image))


def test_crop_without_downscale_is_bilinear_sampling_with_black_outside():
    frame = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    for box in ([-20.3, 250.7, 80.0, 80.0], [150.2, -10.5, 64.0, 64.0], [30.0, 40.0, 100.0, 100.0]):
        crop = crop_image(frame, box, 96)
        steps = np.arange(96)
        grid = np.stack(np.meshgrid(box[0] + steps * box[2] / 96, box[1] + steps * box[3] / 96), axis=-1)
        expected = bilinear_sample(frame, grid)
        assert np.abs(crop.astype(int) - expected).max() <= 1  # float32 rounding
    outside = crop_image(frame, [-500.0, -500.0, 100.0, 100.0], 32)
    assert not outside.any()


def test_a_large_downscale_keeps_smooth_content_where_camera_cropped_puts_it():
    """A smooth image survives the pyramid: crop pixel i shows frame point x + i * w / size."""
    height, width = 1920, 1088
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    frame = np.stack([128 + 100 * np.sin(u / 300.0), 128 + 100 * np.cos(v / 400.0), 0.1 * u + 0.05 * v],
                     axis=-1).round().astype(np.uint8)
    box = np.array([100.0, 400.0, 900.0, 900.0])  # 3.5x down: one pyramid level and bilinear
    crop = crop_image(frame, box, 256).astype(np.float64)
    steps = np.arange(256)
    x, y = np.meshgrid(box[0] + steps * box[2] / 256, box[1] + steps * box[3] / 256)
    expected = np.stack([128 + 100 * np.sin(x / 300.0), 128 + 100 * np.cos(y / 400.0), 0.1 * x + 0.05 * y], axis=-1)
    inner = (slice(4, -4), slice(4, -4))  # the frame's border mirrors at its edge
    assert np.abs(crop[inner] - expected[inner]).max() < 3.0  # of 255: blur and rounding only
    # aliasing-prone detail (a 2-pixel checkerboard) averages out instead of turning into moire
    checker = ((u // 1 + v // 1) % 2 * 255).astype(np.uint8)[..., None].repeat(3, axis=-1)
    flat = crop_image(checker, box, 128).astype(np.float64)
    assert np.abs(flat[inner] - 127.5).max() < 4.0


# -- the raw layout and its converter (hand-made, no download) ------------------------------------------------------

NAMES = ("camA", "camB", "camC")
# person 1's camB video is one frame ahead (as the filmed person of the demo is in cam03)
OFFSETS = ({"camA": 0, "camB": 0, "camC": 0}, {"camA": -1, "camB": 0, "camC": -1})


def _look_at(position, name) -> Camera:
    position = np.asarray(position, dtype=np.float64)
    forward = np.array([0.0, 0.0, 1000.0]) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(forward, right), forward])
    return Camera(K=[[1200, 0, 320], [0, 1200, 480], [0, 0, 1]], dist=[-0.01, 0.02, 0, 0, 0], R=R, t=-R @ position,
                  name=name)


def _write_layout(root, cameras, people, missing=(), untracked=()):
    """A raw pose2sim_multi tree: ``people`` [P, F, 33, 3] world mm (global frames) seen by every camera
    except at (camera, person, global frame) in ``missing``; ``untracked``: (camera, video frame) rows of
    nobody's."""
    (root / "calibration").mkdir(parents=True)
    (root / "detections").mkdir()
    (root / "calibration" / "cameras.json").write_text(json.dumps({"units": "mm", "cameras": [
        {"name": c.name, "image_size": [640, 960], "K": c.K.tolist(), "dist": c.dist.tolist(), "R": c.R.tolist(),
         "t": c.t.tolist()} for c in cameras]}))
    num_people, num_frames = people.shape[:2]
    for camera in cameras:
        rows = []
        for p in range(num_people):
            uv = camera.world_to_image(people[p])
            for frame in range(num_frames):
                if (camera.name, p, frame) not in missing:
                    video_frame = frame + OFFSETS[p][camera.name]
                    if video_frame >= 0:
                        rows.append((video_frame, p, uv[frame]))
        rows += [(frame, -1, np.full((33, 2), 300.0)) for name, frame in untracked if name == camera.name]
        rows.sort(key=lambda row: (row[0], row[1] < 0, row[1]))
        folder = root / "images" / camera.name
        folder.mkdir(parents=True)
        for frame, p, _ in rows:
            if p >= 0:
                Image.new("RGB", (64, 64), (90, 90, 90)).save(folder / pose2sim_multi.image_name(frame, p))
        landmarks = np.array([np.concatenate([uv, np.ones((33, 1))], -1) for _, _, uv in rows], np.float32)
        np.savez(root / "detections" / f"{camera.name}.npz", frames=np.array([r[0] for r in rows], np.int32),
                 person=np.array([r[1] for r in rows], np.int32), landmarks=landmarks,
                 crop_boxes=np.tile(np.array([0, 0, 640, 640], np.float32), (len(rows), 1)),
                 video_size=np.array([640, 960]), fps=60.0)
    (root / "manifest.json").write_text(json.dumps({
        "dataset": "pose2sim_multi", "layout_version": 1, "skeleton": "blazepose_33", "cameras": list(NAMES),
        "people": [{"person": p, "subject": f"person{p}", "sequence": f"Demo/person{p}", "frame_offsets": OFFSETS[p],
                    "frame_offsets_estimated": True} for p in range(num_people)],
        "num_frames": num_frames, "frame_step": 1, "fps": 60.0, "test_from_frame": num_frames - 1}))


@pytest.fixture
def handmade(tmp_path):
    rng = np.random.default_rng(0)
    body = rng.uniform([-250, -150, 0], [250, 150, 1700], (33, 3))
    people = np.stack([body + [-600.0, 0.0, 0.0], body * 1.1 + [600.0, 100.0, 0.0]])
    people = people[:, None] + np.arange(4)[None, :, None, None] * [20.0, 10.0, 0.0]  # [2, 4 frames, 33, 3]
    cameras = [_look_at([3500, 600, 1700], "camA"), _look_at([-700, 3500, 1800], "camB"),
               _look_at([-2500, -2500, 1600], "camC")]
    root = tmp_path / "pose2sim_multi"
    _write_layout(root, cameras, people, missing={("camC", 0, 2)}, untracked=[("camA", 1), ("camB", 3)])
    return root, cameras, people


def test_converter_gives_every_person_a_sequence_on_their_own_global_frames(handmade, tmp_path):
    root, cameras, people = handmade
    assert get_converter("pose2sim_multi") is pose2sim_multi
    examples = pose2sim_multi.read_examples(root)
    # 2 people x 3 cameras x 4 frames, less the missing view and person 1's frame before their videos start
    assert len(examples) == 24 - 1 - 2
    assert {(e.subject, e.sequence) for e in examples} == {("person0", "Demo/person0"), ("person1", "Demo/person1")}
    by_key = {(e.sequence, e.camera, e.frame): e for e in examples}
    assert ("Demo/person0", "camC", 2) not in by_key
    late = by_key[("Demo/person1", "camA", 2)]
    assert late.image_path.name == "000001_p1.jpg"  # video frame = global frame + offset (-1)
    np.testing.assert_allclose(late.pose2d, cameras[0].world_to_image(people[1, 2]), atol=1e-3)
    assert {e.split for e in examples if e.frame == 3} == {"test"}
    assert {e.split for e in examples if e.frame < 3} == {"train"}

    store = open_store(convert(pose2sim_multi, root, tmp_path / "stores" / "multi.zarr", image_size=32).path)
    assert store.attrs["counts"] == {"train": 15, "val": 0, "test": 6}
    # one person per view and frame in each sequence: the pseudo-GT triangulation takes it as it is
    pseudo = triangulate_store(store)
    sequences, frames = store.load("sequence"), store.load("frame")
    names = store.attrs["codes"]["sequence"]
    scale = np.ptp(people[0, 0], axis=0).max()
    for n in range(len(store)):
        person = names[sequences[n]].endswith("1")
        world = pseudo.world[pseudo.instant_of_example[n]]
        if np.isfinite(world).all():
            np.testing.assert_allclose(world, people[int(person), frames[n]], atol=1e-3 * scale)
    # every instant but person 1's first (only camB's video has it) is triangulated
    assert pseudo.world.shape[0] == 8 and np.isfinite(pseudo.world).all(axis=(1, 2)).sum() == 7


def _rewrite_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _rewrite_npz(path, **arrays):
    with np.load(path) as data:
        contents = {k: data[k] for k in data.files}
    np.savez(path, **{**contents, **arrays})


def _person_column(root, camera, edit):
    with np.load(root / "detections" / f"{camera}.npz") as data:
        person = data["person"].copy()
    edit(person)
    _rewrite_npz(root / "detections" / f"{camera}.npz", person=person)


@pytest.mark.parametrize("damage, file, field", [
    (lambda root: _person_column(root, "camA", lambda p: p.__setitem__(0, 2)), "detections/camA.npz", "person"),
    (lambda root: _person_column(root, "camB", lambda p: p.__setitem__(slice(None), 0)), "detections/camB.npz",
     "person"),  # every row person 0: several rows of one person in one frame
    (lambda root: _rewrite_npz(root / "detections" / "camC.npz", person=np.zeros(3, np.int32)), "detections/camC.npz",
     "person"),
    (lambda root: _rewrite_npz(root / "detections" / "camC.npz", landmarks=np.zeros((6, 17, 3), np.float32)),
     "detections/camC.npz", "landmarks"),
    (lambda root: _rewrite_json(root / "manifest.json", lambda d: d["people"][1].update(sequence="Demo/person0")),
     "manifest.json", "people[1].sequence"),
    (lambda root: _rewrite_json(root / "manifest.json", lambda d: d["people"][0]["frame_offsets"].pop("camB")),
     "manifest.json", "people[0].frame_offsets.camB"),
    (lambda root: _rewrite_json(root / "manifest.json", lambda d: d["people"][1]["frame_offsets"].update(camA="1")),
     "manifest.json", "people[1].frame_offsets.camA"),
    (lambda root: _rewrite_json(root / "manifest.json", lambda d: d["people"][0].update(person=1)),
     "manifest.json", "people[0].person"),
    (lambda root: _rewrite_json(root / "manifest.json", lambda d: d.pop("people")), "manifest.json", "people"),
    (lambda root: _rewrite_json(root / "manifest.json", lambda d: d.update(layout_version=2)), "manifest.json",
     "layout_version"),
])
def test_converter_errors_name_file_and_field(handmade, damage, file, field):
    root = handmade[0]
    damage(root)
    with pytest.raises(RawDataError) as error:
        pose2sim_multi.read_examples(root)
    assert error.value.path == root / file and error.value.field == field


def test_a_seeded_region_covers_the_projected_person_upright():
    camera = _look_at([3500, 600, 1700], "camA")
    body = np.random.default_rng(0).uniform([-250, -150, 0], [250, 150, 1700], (33, 3))
    order = list(ASSOCIATION_JOINTS)
    hips = [order.index(BLAZEPOSE_33.index(n)) for n in ("lhip", "rhip")]
    shoulders = [order.index(BLAZEPOSE_33.index(n)) for n in ("lsho", "rsho")]
    body[[BLAZEPOSE_33.index("lhip"), BLAZEPOSE_33.index("rhip")], 2] = 900.0  # hips below the shoulders
    body[[BLAZEPOSE_33.index("lsho"), BLAZEPOSE_33.index("rsho")], 2] = 1400.0
    uv = camera.world_to_image(body[order])
    roi = seed_roi(uv, hips, shoulders, (640, 960))
    assert abs(roi.rotation) < np.radians(15)  # the camera is upright: so is the person
    corners = roi.to_image(np.array([[0, 0], [1, 1]]))
    assert (uv.min(0) > corners.min(0)).all() and (uv.max(0) < corners.max(0)).all()
    assert seed_roi(uv + [2000.0, 0.0], hips, shoulders, (640, 960)) is None  # centre outside the image


def test_a_failed_build_keeps_the_existing_dataset(handmade, tmp_path):
    root = handmade[0]
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    cache = tmp_path / "cache"
    cache.mkdir()
    with zipfile.ZipFile(cache / POSE2SIM_WHEEL, "w") as zf:
        zf.writestr("Pose2Sim/README.md", "not the demo")
    with pytest.raises(RawDataError, match="Demo_MultiPerson/calibration/Calib.qca.txt"):
        build(root, cache=cache, report=lambda _: None)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert [p.name for p in root.parent.iterdir() if ".tmp-" in p.name] == []


# -- the real recording: a few frames ------------------------------------------------------------------------------

FEW_FRAMES = 6


@pytest.fixture(scope="module")
def few_frames(tmp_path_factory):
    try:
        pose2sim_wheel()
        mediapipe_model("pose_landmark/pose_landmark_full.tflite")
    except AcquisitionError as exc:
        pytest.skip(f"the Pose2Sim wheel or the MediaPipe models are not available: {exc}")
    out = tmp_path_factory.mktemp("raw") / "pose2sim_multi"
    messages = []
    settings = MultiPersonSettings(frame_step=1)
    build(out, max_frames=FEW_FRAMES, max_sync_offset=0, settings=settings, report=messages.append)
    return out, settings, messages


def test_the_build_finds_both_people_in_most_views(few_frames, tmp_path):
    out, _, _ = few_frames
    manifest = json.loads((out / "manifest.json").read_text())
    stats = manifest["statistics"]
    assert manifest["num_frames"] == FEW_FRAMES and stats["instants"] == FEW_FRAMES
    assert len(manifest["people"]) == 2 and stats["people_per_instant"][str(2)] == FEW_FRAMES
    assert [p["frame_offsets"] for p in manifest["people"]] == [dict.fromkeys(manifest["cameras"], 0)] * 2
    for person in (0, 1):
        views = [int((np.load(out / "detections" / f"{c}.npz")["person"] == person).sum()) for c in manifest["cameras"]]
        # each person in at least three of the four views at most instants
        assert sum(views) >= 3 * FEW_FRAMES, views
    assert stats["associated_fraction"] > 0.8
    assert stats["reprojection_error_px"]["p50"] < 25.0  # 2% of the frame diagonal is 44 px
    assert stats["identity"]["switches_2d"] == 0 and stats["identity"]["jumps_3d"] == 0
    with Image.open(next((out / "images" / "cam01").glob("*_p0.jpg"))) as image:
        assert image.size == (256, 256)

    store = open_store(convert(pose2sim_multi, out, tmp_path / "multi.zarr").path)
    assert set(store.attrs["codes"]["sequence"]) == {"Demo_MultiPerson/person0", "Demo_MultiPerson/person1"}
    pseudo = triangulate_store(store, min_views=3)
    assert pseudo.stats["joints_triangulated_fraction"] > 0.8


def test_rebuilding_with_the_same_settings_keeps_the_dataset(few_frames):
    out, settings, _ = few_frames
    stamp = os.stat(out / "manifest.json").st_mtime_ns
    messages = []
    build(out, max_frames=FEW_FRAMES, max_sync_offset=0, settings=settings, report=messages.append)
    assert os.stat(out / "manifest.json").st_mtime_ns == stamp
    assert messages == [f"{out}: already built with these settings (use --force to rebuild)"]
