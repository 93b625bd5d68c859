"""Tests of the synthetic demo world: body model, motions, renderer and the raw dataset layouts."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assets.cameras import Camera, reproject_image
from assets.skeletons import BUILTIN_FORMATS, get_skeleton
from assets.synthetic import (
    STYLES,
    Body,
    Figure,
    Subject,
    figure_box,
    generate_motion,
    generate_world,
    joint_limits,
    render_crop,
    sample_all_formats,
)
from assets.synthetic import world as world_module
from assets.synthetic.__main__ import main as cli_main
from assets.synthetic.body import PART_INDEX, PART_NAMES, PART_SIDES, RIGHT
from assets.synthetic.rigs import crop_around, look_at, ring_rig
from assets.synthetic.seeding import rng_for

IMAGE_SIZE = 128


@pytest.fixture(scope="module")
def tiny_raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    generate_world(root, size="tiny", seed=0)
    return root


def _posed(style="walk", times=(0.0, 0.4, 0.8), subject_key=0, seed=0):
    body = Body(Subject.random(seed, "test", subject_key))
    motion = generate_motion(style, np.asarray(times), seed, "test", subject_key)
    return body, motion, motion.frames(body)


def _figure(body, frames, f=0) -> Figure:
    start, end = body.capsule_endpoints(frames)
    return Figure(start[f], end[f], body.capsule_radii, body.capsule_colours, frames.origins[f, 0, :2])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------
# body model
# ---------------------------------------------------------------------------------------------------
def test_every_registered_format_gives_finite_joints():
    body, motion, frames = _posed()
    for name in BUILTIN_FORMATS:
        joints = body.joints(name, frames)
        assert joints.shape == (motion.num_frames, get_skeleton(name).num_joints, 3), name
        assert np.isfinite(joints).all(), name


def test_formats_place_same_named_joints_differently():
    body, _, frames = _posed("gesture", times=np.linspace(0, 5, 20))
    h36m_pelvis = body.joints("h36m_17", frames)[:, get_skeleton("h36m_17").index("pelv")]
    smpl_pelvis = body.joints("smpl_24", frames)[:, get_skeleton("smpl_24").index("pelv")]
    distance = np.linalg.norm(h36m_pelvis - smpl_pelvis, axis=-1)
    assert np.all(distance > 5) and np.all(distance < 80)
    # the offset is rigid in the pelvis frame, so it keeps its length while the body moves
    assert np.ptp(distance) < 1e-6


def test_every_shared_joint_name_differs_between_formats():
    body, _, frames = _posed(times=[1.0])
    positions: dict[str, list[np.ndarray]] = {}
    for name in BUILTIN_FORMATS:
        for joint, xyz in zip(get_skeleton(name).joint_names, body.joints(name, frames)[0]):
            positions.setdefault(joint, []).append(xyz)
    for joint, points in positions.items():
        points = np.array(points)
        gaps = np.linalg.norm(points[:, None] - points[None], axis=-1)[np.triu_indices(len(points), 1)]
        assert np.all(gaps > 1.0), joint


def _mirror_pose(angles, heading, root_xy):
    """The left/right mirror image (x -> -x) of a pose: sides swapped, sideways rotations negated."""
    mirrored = np.empty_like(angles)
    for p, name in enumerate(PART_NAMES):
        if PART_SIDES[p] == 0:
            mirrored[:, p] = angles[:, p] * np.array([1.0, -1.0, -1.0])
        else:
            partner = ("l" if PART_SIDES[p] == RIGHT else "r") + name[1:]
            mirrored[:, p] = angles[:, PART_INDEX[partner]]  # sided angles are already mirror-convention
    return mirrored, -heading, root_xy * np.array([-1.0, 1.0])


def test_joints_of_mirrored_pose_are_mirrored_joints_in_every_format():
    body, motion, frames = _posed("wave", times=np.linspace(0, 4, 6))
    angles, heading, root_xy = _mirror_pose(motion.angles, motion.heading, motion.root_xy)
    mirrored_frames = body.pose(angles, heading, root_xy)
    flip = np.array([-1.0, 1.0, 1.0])
    for name in BUILTIN_FORMATS:
        skeleton = get_skeleton(name)
        original = body.joints(name, frames)
        mirrored = body.joints(name, mirrored_frames)
        np.testing.assert_allclose(mirrored[:, skeleton.mirror_indices] * flip, original, atol=1e-6, err_msg=name)


def test_subjects_have_different_proportions():
    skeleton = get_skeleton("h36m_17")
    hip, knee, ankle = (skeleton.index(n) for n in ("lhip", "lkne", "lank"))
    thigh, shin = [], []
    for key in range(8):
        body, _, frames = _posed(times=[0.0], subject_key=key)
        joints = body.joints("h36m_17", frames)[0]
        thigh.append(np.linalg.norm(joints[hip] - joints[knee]))
        shin.append(np.linalg.norm(joints[knee] - joints[ankle]))
    thigh, shin = np.array(thigh), np.array(shin)
    assert np.ptp(thigh) / thigh.mean() > 0.05
    assert np.ptp(thigh / shin) > 0.02  # proportions, not only overall size


def test_sample_all_formats_rows_are_the_same_bodies():
    poses = sample_all_formats(30, seed=1, formats=("h36m_17", "smpl_24"), poses_per_subject=10)
    assert poses["h36m_17"].shape == (30, 17, 3) and poses["smpl_24"].shape == (30, 24, 3)
    h36m_wrist = poses["h36m_17"][:, get_skeleton("h36m_17").index("lwri")]
    smpl_wrist = poses["smpl_24"][:, get_skeleton("smpl_24").index("lwri")]
    assert np.linalg.norm(h36m_wrist - smpl_wrist, axis=-1).max() < 100


# ---------------------------------------------------------------------------------------------------
# motions
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", STYLES)
def test_motion_stays_within_joint_limits_on_the_ground(style):
    limits = joint_limits()
    body, motion, frames = _posed(style, times=np.arange(0, 10, 0.04))
    assert np.all(motion.angles >= limits[..., 0]) and np.all(motion.angles <= limits[..., 1])
    joints = body.joints("bml_movi_87", frames)
    lowest = joints[..., 2].min(axis=1)
    assert np.all(lowest > -40) and np.all(lowest < 150)  # markers (heel, toes) near the floor
    assert np.linalg.norm(motion.root_xy, axis=1).max() < 1300 + 1e-6


@pytest.mark.parametrize("style", STYLES)
def test_motion_is_smooth(style):
    def trajectory(fps):
        body, _, frames = _posed(style, times=np.arange(0, 6, 1 / fps), subject_key=3)
        return body.joints("bml_movi_87", frames)

    coarse, fine = trajectory(25), trajectory(100)
    speed = np.linalg.norm(np.diff(coarse, axis=0), axis=-1) * 25
    assert speed.max() < 6000  # mm/s: brisk limbs, no jumps
    # For a trajectory with bounded acceleration the second difference shrinks with dt^2 (1/16 from
    # 25 to 100 fps); a kink (velocity jump) would shrink only with dt (1/4), a jump not at all.
    ratio = np.abs(np.diff(fine, 2, axis=0)).max() / np.abs(np.diff(coarse, 2, axis=0)).max()
    assert ratio < 0.15


# ---------------------------------------------------------------------------------------------------
# renderer
# ---------------------------------------------------------------------------------------------------
def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    padded = np.pad(mask, radius)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + h, dx:dx + w]
    return out


def test_projected_joints_land_on_the_rendered_person():
    """Render on black without occluders: every joint's pixel (or one within a few pixels, for surface
    offsets of up to 40 mm) belongs to the person, through a distorted camera and a crop."""
    near_joint_centre, near_any = [], []
    for key in range(12):
        body, _, frames = _posed(STYLES[key % len(STYLES)], times=[1.3 * key], subject_key=key)
        camera = ring_rig(rng_for(0, "test-camera", key), 1, (1000, 1000), 1145.0)[0]
        assert abs(camera.dist[0]) >= 0.05
        figure = _figure(body, frames)
        box = crop_around(figure_box(camera, figure), rng_for(0, "test-box", key))
        image = render_crop(camera, (1000, 1000), box, (IMAGE_SIZE, IMAGE_SIZE), figure)
        person = image.max(axis=-1) > 0
        assert 0.05 < person.mean() < 0.6
        crop_camera = camera.cropped(box, (IMAGE_SIZE, IMAGE_SIZE))
        for name in BUILTIN_FORMATS:
            pixel = np.rint(crop_camera.world_to_image(body.joints(name, frames)[0])).astype(int)  # centres at integers
            inside = np.all((pixel >= 0) & (pixel < IMAGE_SIZE), axis=1)
            hits = _dilate(person, 3)[pixel[inside, 1], pixel[inside, 0]]
            near_any.extend(hits)
            if name == "h36m_17":
                near_joint_centre.extend(_dilate(person, 2)[pixel[inside, 1], pixel[inside, 0]])
    assert all(near_joint_centre)
    assert np.mean(near_any) > 0.999


def _centroid(weights: np.ndarray) -> np.ndarray:
    rows, columns = np.indices(weights.shape)
    return np.array([(columns * weights).sum(), (rows * weights).sum()]) / weights.sum()


def test_rendered_sphere_is_centred_on_its_projection_before_and_after_resampling():
    """Pins the pixel convention: array element [r, c] shows image point (c, r) of the file's camera, the
    convention of ``reproject_image``, so converters' resampled crops stay aligned with the labels."""
    camera = ring_rig(rng_for(0, "test-sphere"), 1, (1000, 1000), 1145.0)[0]
    for k in range(4):
        centre = np.array([200.0 * k - 300, 100.0, 900.0 + 150 * k])
        sphere = Figure(centre[None], centre[None], np.array([[60.0, 60.0]]), np.ones((1, 3)), centre[:2])
        u, v = camera.world_to_image(centre)
        box = (u - 150 + 17 * k, v - 150 - 9 * k, 300.0, 300.0)
        image = render_crop(camera, (1000, 1000), box, (IMAGE_SIZE, IMAGE_SIZE), sphere)
        file_camera = camera.cropped(box, (IMAGE_SIZE, IMAGE_SIZE))
        mask = image.max(axis=-1) > 0
        np.testing.assert_allclose(_centroid(mask), file_camera.world_to_image(centre), atol=0.15)
        virtual = file_camera.looking_at(file_camera.world_to_camera(centre), 400.0, 64)
        resampled = reproject_image(mask[..., None].astype(np.float32), file_camera, virtual, (64, 64))[..., 0]
        np.testing.assert_allclose(_centroid(resampled), virtual.world_to_image(centre), atol=0.15)


def test_crop_pixels_outside_the_frame_are_black():
    body, _, frames = _posed(times=[0.0])
    camera = ring_rig(rng_for(0, "test-camera"), 1, (1000, 1000), 1145.0)[0]
    figure = _figure(body, frames)
    x, y, w, h = figure_box(camera, figure)
    frame_size = (x + w / 2, 1000)  # pretend the frame ends in the middle of the person
    image = render_crop(camera, frame_size, (x, y, w, h), (64, 64), figure, rng=np.random.default_rng(0), noise_std=3.0)
    assert image[:, 32:].max() == 0
    assert (image[:, :32].max(axis=-1) > 20).mean() > 0.1  # the person's left half


# ---------------------------------------------------------------------------------------------------
# world generation
# ---------------------------------------------------------------------------------------------------
def test_generation_is_deterministic(tiny_raw, tmp_path):
    again = tmp_path / "again"
    generate_world(again, size="tiny", seed=0)
    first, second = _files(tiny_raw), _files(again)
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)


def test_other_seed_gives_other_world(tiny_raw, tmp_path):
    generate_world(tmp_path, size="tiny", seed=1, datasets=["demo_lsp2d"])
    other, first = (np.load(r / "demo_lsp2d" / "joints.npy") for r in (tmp_path, tiny_raw))
    assert other.tobytes() != first.tobytes()


def test_failed_generation_leaves_no_dataset_folder(tmp_path, monkeypatch):
    def broken(job):
        (job.out / "half_written.npy").write_bytes(b"x")
        raise RuntimeError("killed")

    monkeypatch.setitem(world_module._GENERATORS, "demo_lsp2d", broken)
    with pytest.raises(RuntimeError):
        generate_world(tmp_path, size="tiny", datasets=["demo_lsp2d"])
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_progress_per_dataset(tiny_raw, tmp_path, capsys):
    assert cli_main(["--out", str(tmp_path), "--size", "tiny", "--datasets", "demo_lsp2d", "demo_smpl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("demo_lsp2d: 10 images in ")
    assert lines[1].startswith("demo_smpl: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_lsp2d", "demo_smpl"]
    # a dataset does not depend on which others are generated with it
    assert _files(tmp_path / "demo_smpl") == _files(tiny_raw / "demo_smpl")


def _jpeg(path: Path, size=(IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == size, path
        return np.asarray(image)


def _crop_camera(camera: Camera, box, size=(IMAGE_SIZE, IMAGE_SIZE)) -> Camera:
    return camera.cropped(box, size)


def _assert_centred(uv: np.ndarray, size=IMAGE_SIZE):
    """A detector-style crop has the person inside and roughly in the middle."""
    assert np.all((uv > -1) & (uv < size + 1))
    assert np.all(np.abs(uv.mean(axis=0) - size / 2) < 0.25 * size)


def test_h36m_layout(tiny_raw):
    root = tiny_raw / "demo_h36m"
    cameras = json.loads((root / "calibration.json").read_text())["cameras"]
    assert [c["id"] for c in cameras] == ["54138969", "55011271", "58860488", "60457274"]
    for c in cameras:
        assert np.shape(c["K"]) == (3, 3) and np.shape(c["dist"]) == (5,) and np.shape(c["R"]) == (3, 3)
        assert np.shape(c["t"]) == (3,) and c["image_size"] == [1000, 1000] and abs(c["dist"][0]) >= 0.05
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["S1", "S7", "S9"]  # train, val, test
    for subject in ("S1", "S7", "S9"):
        for pose_file in sorted((root / subject / "poses3d").glob("*.npy")):
            action = pose_file.stem
            poses = np.load(pose_file)
            assert poses.dtype == np.float32 and poses.shape[1:] == (17, 3)
            for c in cameras:
                camera = Camera(c["K"], c["dist"], c["R"], c["t"])
                crops = np.load(root / subject / "crops" / f"{action}.{c['id']}.npy")
                assert crops.dtype == np.float32 and crops.shape == (len(poses), 4)
                for f in range(len(poses)):
                    _jpeg(root / subject / "images" / f"{action}.{c['id']}" / f"{f:06d}.jpg")
                    _assert_centred(_crop_camera(camera, crops[f]).world_to_image(poses[f]))


def _read_3dhp_calibration(text: str) -> dict[int, dict[str, list[float]]]:
    cameras, current = {}, None
    for line in text.splitlines():
        key, *values = line.split()
        if key == "name":
            current = cameras[int(values[0])] = {}
        else:
            current[key] = [float(v) for v in values]
    return cameras


def test_3dhp_layout(tiny_raw):
    root = tiny_raw / "demo_3dhp"
    assert sorted(p.name for p in root.iterdir()) == ["S1", "S3", "S4"]  # train, val, test
    unlabelled, joints, truncated, examples = 0, 0, 0, 0
    for folder in sorted(root.glob("S*/Seq*")):
        calibration = _read_3dhp_calibration((folder / "camera.calibration").read_text())
        annot = np.load(folder / "annot.npz")
        cams, frames = annot["cameras"], annot["frames"]
        assert cams.dtype.kind == "i" and frames.dtype.kind == "i" and sorted(calibration) == sorted(cams.tolist())
        annot3, annot2 = annot["annot3"], annot["annot2"]
        assert annot3.dtype == np.float32 and annot3.shape == (len(cams), len(frames), 28, 3)
        assert annot2.dtype == np.float32 and annot2.shape == (len(cams), len(frames), 28, 2)
        assert np.array_equal(np.isnan(annot3).any(-1), np.isnan(annot2).any(-1))
        crops = np.load(folder / "crops.npy")
        assert crops.dtype == np.float32 and crops.shape == (len(cams), len(frames), 4)
        for c, index in enumerate(cams):
            block = calibration[int(index)]
            assert block["size"] == [2048, 2048] and len(block["intrinsic"]) == 16 and len(block["extrinsic"]) == 16
            lens = Camera(np.reshape(block["intrinsic"], (4, 4))[:3, :3], block["distortion"])
            assert abs(block["distortion"][0]) >= 0.05
            np.testing.assert_allclose(lens.camera_to_image(annot3[c]), annot2[c], atol=1e-2)
            for f, frame in enumerate(frames):
                _jpeg(folder / "imageSequence" / f"video_{index}" / f"frame_{frame:06d}.jpg")
                x, y, w, h = crops[c, f]
                uv = annot2[c, f][~np.isnan(annot2[c, f, :, 0])]
                cut = np.any((uv < [x, y]) | (uv > [x + w, y + h]))
                truncated += cut or x < 0 or y < 0 or x + w > 2048 or y + h > 2048
                examples += 1
        unlabelled += np.isnan(annot3[..., 0]).sum()
        joints += annot3[..., 0].size
    assert 0.01 < unlabelled / joints < 0.12
    assert 0 < truncated < examples


def test_smpl_layout(tiny_raw):
    root = tiny_raw / "demo_smpl"
    for split in ("train", "validation", "test"):
        sequences = sorted((root / "sequenceFiles" / split).glob("*.npz"))
        assert sequences, split
        for path in sequences:
            data = np.load(path)
            num_frames = len(data["jointPositions"])
            expected = {
                "jointPositions": (np.float64, (num_frames, 72)), "cam_poses": (np.float64, (num_frames, 4, 4)),
                "cam_intrinsics": (np.float64, (3, 3)), "cam_distortion": (np.float64, (5,)),
                "crop_boxes": (np.float32, (num_frames, 4)),
            }
            for key, (dtype, shape) in expected.items():
                assert data[key].dtype == dtype and data[key].shape == shape, key
            assert data["image_size"].dtype.kind == "i" and data["image_size"].tolist() == [1080, 1920]
            joints_m = data["jointPositions"].reshape(num_frames, 24, 3)
            assert 1.0 < np.ptp(joints_m[..., 2], axis=1).max() < 2.5  # a person's height, in metres
            assert not np.allclose(data["cam_poses"][0], data["cam_poses"][-1])  # the camera moves
            for f in range(num_frames):
                image = _jpeg(root / "imageFiles" / path.stem / f"image_{f:05d}.jpg")
                pose = data["cam_poses"][f]
                camera = Camera(data["cam_intrinsics"], data["cam_distortion"], pose[:3, :3], pose[:3, 3] * 1000)
                crop_camera = _crop_camera(camera, data["crop_boxes"][f], image.shape[1::-1])
                _assert_centred(crop_camera.world_to_image(joints_m[f] * 1000))


def test_multiview2d_layout_and_detection_errors(tiny_raw):
    root = tiny_raw / "demo_multiview2d"
    errors, confidences = [], []
    calibrations = sorted(root.glob("calibration_*.json"))
    assert calibrations
    for calibration in calibrations:
        sequence = calibration.stem.removeprefix("calibration_")
        cameras = json.loads(calibration.read_text())["cameras"]
        assert 3 <= len(cameras) <= 4
        truth = np.load(root / "_evaluation_only" / f"{sequence}.npy")
        assert truth.dtype == np.float32 and truth.shape[1:] == (19, 3)
        for c in cameras:
            assert np.shape(c["t"]) == (3, 1) and len(c["distCoef"]) == 5 and c["resolution"] == [1920, 1080]
            camera = Camera(c["K"], c["distCoef"], c["R"], np.ravel(c["t"]) * 10.0)  # centimetres
            detections = json.loads((root / "detections" / sequence / f"{c['name']}.json").read_text())
            assert detections["skeleton"] == "coco_19"
            assert [e["frame"] for e in detections["frames"]] == list(range(len(truth)))
            for entry in detections["frames"]:
                keypoints = np.array(entry["keypoints"])
                assert keypoints.shape == (19, 3) and len(entry["crop_box"]) == 4
                _jpeg(root / "images" / sequence / c["name"] / f"{entry['frame']:06d}.jpg")
                true_uv = camera.world_to_image(truth[entry["frame"]])
                _assert_centred(_crop_camera(camera, entry["crop_box"]).world_to_image(truth[entry["frame"]]))
                errors.extend(np.linalg.norm(keypoints[:, :2] - true_uv, axis=1))
                confidences.extend(keypoints[:, 2])
    errors, confidences = np.array(errors), np.array(confidences)
    detected = confidences > 0
    outliers = detected & (errors > 20)
    assert 0.02 < np.mean(~detected) < 0.12
    assert 0.06 < np.mean(outliers) < 0.16
    assert 1.5 < np.median(errors[detected & ~outliers]) < 6.0
    assert np.median(confidences[outliers]) > 0.4  # outliers are not given away by their confidence


def test_lsp2d_layout(tiny_raw):
    root = tiny_raw / "demo_lsp2d"
    joints = np.load(root / "joints.npy")
    assert joints.dtype == np.float32 and joints.shape == (10, 14, 3)
    assert set(np.unique(joints[..., 2])) <= {0.0, 1.0} and joints[..., 2].mean() > 0.8
    sizes = set()
    for i, labels in enumerate(joints):
        with Image.open(root / "images" / f"im{i:04d}.jpg") as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            width, height = image.size
        assert 100 <= width <= 180 and 100 <= height <= 180
        sizes.add((width, height))
        uv = labels[labels[:, 2] == 1, :2]
        assert np.all((uv > -3) & (uv < [width + 3, height + 3]))
        assert np.all(np.abs(uv.mean(axis=0) - [width / 2, height / 2]) < 0.25 * np.array([width, height]))
    assert len(sizes) > 1
    assert sorted(p.name for p in root.iterdir()) == ["images", "joints.npy"]  # no camera


# ---------------------------------------------------------------------------------------------------
# appearance: what flip augmentation and facing direction need
# ---------------------------------------------------------------------------------------------------
def test_left_and_right_parts_have_the_same_colours():
    """A side colour code would make a mirrored crop show a body that cannot exist (left colours on the
    right), contradicting flip augmentation; sides must follow from geometry, as for real people."""
    body = Body(Subject.random(0, "test", "colours"))
    sides = np.array(PART_SIDES)[body.capsule_parts]
    left = sorted(map(tuple, body.capsule_colours[sides < 0].round(6)))
    right = sorted(map(tuple, body.capsule_colours[sides > 0].round(6)))
    assert len(left) > 0 and left == right


def test_front_markers_show_from_the_front_only():
    body, _, frames = _posed("walk", times=[0.0])
    figure = _figure(body, frames)
    markers = body.front_marker_capsules
    assert len(markers) == 2
    start, end = body.capsule_endpoints(frames)
    torso = PART_INDEX["spine_upper"]
    torso_capsule = [c for c in range(len(body.capsule_parts)) if body.capsule_parts[c] == torso and c not in markers][0]
    chest = (start[0, torso_capsule] + end[0, torso_capsule]) / 2
    facing = (start[0, markers[-1]] + end[0, markers[-1]]) / 2 - chest
    facing[2] = 0.0
    facing /= np.linalg.norm(facing)
    hidden = np.setdiff1d(np.arange(len(body.capsule_parts)), markers)
    without = Figure(figure.start[hidden], figure.end[hidden], figure.radii[hidden], figure.colours[hidden],
                     figure.ground_xy)
    K = np.array([[1145.0, 0, 499.5], [0, 1145.0, 499.5], [0, 0, 1]])
    changed = {}
    for view, sign in (("front", 1.0), ("back", -1.0)):
        camera = look_at(K, np.zeros(5), chest + sign * 4000.0 * facing, chest)
        box = crop_around(figure_box(camera, figure), rng_for(0, "test-front", view))
        images = [render_crop(camera, (1000, 1000), box, (IMAGE_SIZE, IMAGE_SIZE), f) for f in (figure, without)]
        changed[view] = np.abs(images[0].astype(float) - images[1].astype(float)).max(axis=-1) > 0.05 * images[0].max()
    assert changed["front"].sum() >= 15  # the band spans dozens of pixels of a 128 px crop
    assert changed["back"].sum() == 0
