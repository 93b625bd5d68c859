"""The LiteRT BlazePose runner (assets/real/blazepose_tflite.py): graph arithmetic on hand-made tensors, and on
real Pose2Sim demo frames against MediaPipe itself (its virtualenv in the cache, as `make setup` leaves it).

Tolerances are relative to what is compared (image size, person height, tensor pixels), so that another
CPU's floating point (XNNPACK kernels differ between instruction sets) cannot flip them.
"""

import io
import math
import re
import threading

import numpy as np
import pytest

from assets.real import blazepose, blazepose_tflite as bt
from assets.real.cache import AcquisitionError, mediapipe_model, mediapipe_python, pose2sim_wheel, read_member

SINGLE_VIDEO = "Pose2Sim/Demo_SinglePerson/videos/cam01.mp4"
MULTI_VIDEO = "Pose2Sim/Demo_MultiPerson/videos/cam04.mp4"
# frames where both people are plainly visible and apart; their second detection scores 0.76-0.85 (the
# threshold is 0.5), so numerical noise cannot lose it
MULTI_FRAMES = (7, 8, 9)
SINGLE_FRAMES = 3
# the square the downstream pose estimator crops around a person box: its larger side times this
# (assets/person_crops.py BOX_PADDING)
CROP_PADDING = 1.3


def _iou(a, b) -> float:
    low, high = np.maximum(a[:2], b[:2]), np.minimum(a[:2] + a[2:], b[:2] + b[2:])
    inter = np.prod(np.clip(high - low, 0, None))
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def _box_of(points) -> np.ndarray:
    low, high = points.min(axis=0), points.max(axis=0)
    return np.concatenate([low, high - low])


# -- anchors, decoding, suppression (no model) ------------------------------------------------------------

def test_anchors_follow_the_ssd_anchor_options():
    anchors = bt.ssd_anchors()
    assert anchors.shape == (bt.NUM_ANCHORS, 4) == (2254, 4)
    assert np.all(anchors[:, 2:] == 1.0)  # fixed_anchor_size
    # stride 8: a 28 x 28 grid, two anchors per cell (the aspect ratio and the interpolated scale)
    np.testing.assert_allclose(anchors[0], [0.5 / 28, 0.5 / 28, 1, 1])
    np.testing.assert_allclose(anchors[1], anchors[0])
    np.testing.assert_allclose(anchors[2, :2], [1.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(anchors[2 * 28, :2], [0.5 / 28, 1.5 / 28])  # the next row
    # stride 16 from 28*28*2 on; the three stride-32 layers share one 7 x 7 grid, six anchors a cell
    np.testing.assert_allclose(anchors[1568, :2], [0.5 / 14, 0.5 / 14])
    np.testing.assert_allclose(anchors[1960:1966, :2], np.full((6, 2), 0.5 / 7))
    np.testing.assert_allclose(anchors[1966, :2], [1.5 / 7, 0.5 / 7])
    np.testing.assert_allclose(anchors[-1], [6.5 / 7, 6.5 / 7, 1, 1])


def _raw(boxes: dict, logits: dict):
    """Model outputs with the given raw 12-vectors and score logits at anchor indices, nothing elsewhere."""
    raw_boxes = np.zeros((bt.NUM_ANCHORS, 12), dtype=np.float32)
    raw_scores = np.full((bt.NUM_ANCHORS, 1), -10.0, dtype=np.float32)
    for index, values in boxes.items():
        raw_boxes[index] = values
    for index, logit in logits.items():
        raw_scores[index] = logit
    return raw_boxes, raw_scores


def test_decoding_scales_offsets_by_the_anchor_and_keeps_scores_over_the_threshold():
    anchor = bt.ssd_anchors()[1000]
    # (x, y, w, h) then 4 keypoints (x, y), in 224ths of the anchor size, relative to the anchor centre
    values = [22.4, -11.2, 44.8, 22.4, 0, 0, 0, -44.8, 11.2, 11.2, 0, 0]
    raw_boxes, raw_scores = _raw({1000: values, 1001: values, 5: [0, 0, -10, 10] + [0] * 8},
                                 {1000: 3.0, 1001: -0.1, 5: 5.0})
    decoded = bt.decode_detections(raw_boxes, raw_scores)
    # anchor 1001 scores sigmoid(-0.1) < 0.5; anchor 5 has a negative width (dropped, as MediaPipe does)
    assert len(decoded) == 1
    assert decoded.scores[0] == pytest.approx(1 / (1 + math.exp(-3.0)))
    centre = anchor[:2] + [0.1, -0.05]
    np.testing.assert_allclose(decoded.boxes[0], [*(centre - [0.1, 0.05]), *(centre + [0.1, 0.05])], atol=1e-6)
    np.testing.assert_allclose(decoded.keypoints[0], anchor[:2] + np.array([[0, 0], [0, -0.2], [0.05, 0.05], [0, 0]]),
                               atol=1e-6)


def test_score_logits_are_clipped_before_the_sigmoid():
    raw_boxes, raw_scores = _raw({7: [0, 0, 10, 10] + [0] * 8}, {7: 1e6})
    with np.errstate(all="raise"):
        decoded = bt.decode_detections(raw_boxes, raw_scores)
    assert decoded.scores[0] == pytest.approx(1 / (1 + math.exp(-bt.DETECTION_SCORE_CLIPPING)))


def test_weighted_nms_merges_overlapping_detections_into_their_score_weighted_mean():
    boxes = np.array([[0.10, 0.10, 0.30, 0.30], [0.12, 0.10, 0.32, 0.30], [0.60, 0.60, 0.70, 0.70]])
    keypoints = np.stack([np.full((4, 2), 0.2), np.full((4, 2), 0.26), np.full((4, 2), 0.65)])
    merged = bt.weighted_nms(bt.RawDetections(np.array([0.6, 0.9, 0.7]), boxes, keypoints))
    assert len(merged) == 2
    np.testing.assert_allclose(merged.scores, [0.9, 0.7])  # best first; the merged one keeps its best score
    np.testing.assert_allclose(merged.boxes[0], (0.9 * boxes[1] + 0.6 * boxes[0]) / 1.5)
    np.testing.assert_allclose(merged.keypoints[0], np.full((4, 2), (0.9 * 0.26 + 0.6 * 0.2) / 1.5))
    np.testing.assert_allclose(merged.boxes[1], boxes[2])


def test_no_detections_decode_to_an_empty_result():
    empty = bt.weighted_nms(bt.decode_detections(*_raw({}, {})))
    assert len(empty) == 0 and empty.boxes.shape == (0, 4) and empty.keypoints.shape == (0, 4, 2)


# -- letterbox and regions (no model) ----------------------------------------------------------------------

@pytest.mark.parametrize("width, height", [(1088, 1920), (1920, 1080), (500, 500)])
def test_letterbox_round_trip_and_the_sampled_tensor_agree(width, height):
    points = np.array([[0.0, 0.0], [width - 1.0, height - 1.0], [0.3 * width, 0.7 * height]])
    normalised = bt.image_to_letterbox(points, width, height)
    np.testing.assert_allclose(bt.letterbox_to_image(normalised, width, height), points, atol=1e-9)
    assert np.all((normalised > 0) & (normalised < 1))
    left, top, right, bottom = bt.letterbox_padding(width, height)
    assert left == right and top == bottom and min(left, top) == 0
    assert max(width, height) * (1 - 2 * max(left, top)) == pytest.approx(min(width, height))

    # a bright square in the image shows up in the detector's input where image_to_letterbox says
    u, v = 0.3 * width, 0.7 * height
    half = max(width, height) / 224 * 3  # three tensor pixels across, so the subsampling cannot miss it
    image = np.zeros((height, width, 3), dtype=np.uint8)
    (x0, x1), (y0, y1) = (int(u - half), int(u + half)), (int(v - half), int(v + half))
    image[y0:y1 + 1, x0:x1 + 1] = 255
    centre = [(x0 + x1) / 2, (y0 + y1) / 2]
    tensor = bt.detector_input(image)
    assert tensor.shape == (224, 224, 3) and tensor.dtype == np.float32
    assert tensor.min() == -1.0 and tensor.max() == 1.0
    weight = tensor[..., 0] + 1.0
    rows, cols = np.mgrid[0:224, 0:224]
    found = np.array([(weight * cols).sum(), (weight * rows).sum()]) / weight.sum()
    # within half a tensor pixel: MediaPipe reads tensor pixel i as i / 224, not (i + 1/2) / 224
    np.testing.assert_allclose(found / 224, bt.image_to_letterbox(centre, width, height), atol=0.5 / 224)


def test_regions_turn_from_the_alignment_points_and_crop_where_they_project():
    roi = bt.PoseRoi.from_alignment_points([100.0, 200.0], [100.0, 120.0])  # end point straight above: upright
    assert roi.rotation == pytest.approx(0.0) and roi.side == pytest.approx(2 * 80 * bt.ROI_SCALE)
    lying = bt.PoseRoi.from_alignment_points([100.0, 200.0], [180.0, 200.0])  # end point to the right
    assert lying.rotation == pytest.approx(math.pi / 2)
    np.testing.assert_allclose(lying.to_image([0.5, 0.0]), [100 + lying.side / 2, 200], atol=1e-9)  # crop top

    # a dot seen in a turned crop maps back through the ROI (256 px side: crop pixels are image pixels)
    roi = bt.PoseRoi((150.0, 140.0), 256.0, 0.7)
    image = np.zeros((300, 320, 3), dtype=np.uint8)
    u, v = 190.0, 110.0
    image[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3] = 255
    crop = bt.landmark_input(image, roi)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.float32 and crop.max() > 0.9
    weight = crop[..., 0]
    rows, cols = np.mgrid[0:256, 0:256]
    found = np.array([(weight * cols).sum(), (weight * rows).sum()]) / weight.sum() / 256
    # MediaPipe samples the ROI half a pixel right of and below its centre (see Landmarker.crop)
    np.testing.assert_allclose(roi.to_image(found) + 0.5, [u, v], atol=0.5)


def test_heatmap_refinement_moves_confident_landmarks_to_the_weighted_cell_mean():
    heatmap = np.full((64, 64, 2), -20.0, dtype=np.float32)
    heatmap[10, 20, 0] = heatmap[10, 21, 0] = 20.0  # confident: two cells
    heatmap[40, 40, 1] = -0.5  # under min_confidence: left alone
    points = np.array([[20.4 / 64, 10.9 / 64], [40.5 / 64, 40.5 / 64]])
    refined = bt.refine_from_heatmap(points, heatmap)
    np.testing.assert_allclose(refined[0], [20.5 / 64, 10 / 64], atol=1e-6)
    np.testing.assert_allclose(refined[1], points[1])


# -- missing models ----------------------------------------------------------------------------------------

def test_a_missing_model_names_its_path_and_make_setup(tmp_path):
    with pytest.raises(AcquisitionError, match=r"(?s)pose_detection\.tflite.*make setup"):
        mediapipe_model(bt.DETECTOR_MODEL, tmp_path)
    # an install that stopped half-way (no ready mark) is not trusted either
    model = tmp_path / "mediapipe-venv/lib/python3.11/site-packages/mediapipe/modules" / bt.LANDMARK_MODEL
    model.parent.mkdir(parents=True)
    model.write_bytes(b"cut short")
    with pytest.raises(AcquisitionError, match="unfinished install.*make setup"):
        mediapipe_model(bt.LANDMARK_MODEL, tmp_path)
    missing = tmp_path / "nowhere.tflite"
    with pytest.raises(AcquisitionError, match=f"{re.escape(str(missing))}.*make setup"):
        bt.PersonDetector(missing)
    with pytest.raises(AcquisitionError, match=f"{re.escape(str(missing))}.*make setup"):
        bt.Landmarker(missing)


# -- real frames ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wheel():
    try:
        mediapipe_model(bt.DETECTOR_MODEL)
        return pose2sim_wheel(download=False)
    except AcquisitionError as exc:
        pytest.skip(f"the download cache is not set up (`make setup`): {exc}")


def _frames(wheel, member: str, count: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(io.BytesIO(read_member(wheel, member))) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


@pytest.fixture(scope="module")
def single(wheel):
    return _frames(wheel, SINGLE_VIDEO, SINGLE_FRAMES)


@pytest.fixture(scope="module")
def mediapipe_landmarks(wheel, tmp_path_factory):
    """MediaPipe's own landmarks of the first frames (its Python solution in video mode, unsmoothed)."""
    folder = tmp_path_factory.mktemp("mediapipe")
    video = folder / "cam01.mp4"
    video.write_bytes(read_member(wheel, SINGLE_VIDEO))
    blazepose.detect_video(mediapipe_python(create=False), video, folder / "landmarks.npz", folder / "images",
                           settings=blazepose.DetectionSettings(smooth_landmarks=False), max_frames=SINGLE_FRAMES)
    return np.load(folder / "landmarks.npz")["landmarks"].astype(np.float64)


def test_one_person_in_the_single_person_video_boxed_around_mediapipes_landmarks(single, mediapipe_landmarks):
    detector = bt.PersonDetector()
    for image, reference in zip(single, mediapipe_landmarks):
        boxes = detector(image)
        assert boxes.shape == (1, 5) and boxes[0, 4] >= bt.DETECTION_MIN_SCORE
        box, points = boxes[0, :4], reference[:, :2]
        # the box stands for the tight box of the joints: measured IoU 0.48-0.81 (p10-p90) on these videos
        assert _iou(box, _box_of(points)) > 0.4
        centre, side = box[:2] + box[2:] / 2, CROP_PADDING * box[2:].max()
        assert np.mean(np.all(np.abs(points - centre) <= side / 2, axis=1)) >= 0.9
        people = bt.detect_people(image)
        assert len(people) == 1 and people[0].present


def test_landmarks_agree_with_mediapipe(single, mediapipe_landmarks):
    detector, landmarker = bt.PersonDetector(), bt.Landmarker()
    for index, (image, reference) in enumerate(zip(single, mediapipe_landmarks)):
        result = landmarker(image, detector.detect(image)[0].roi)
        height = np.ptp(reference[:, 1])
        error = np.linalg.norm(result.landmarks[:, :2] - reference[:, :2], axis=1) / height
        if index == 0:
            # MediaPipe's video mode detects on its first frame: the same graph, so the same numbers up to
            # float rounding (measured on 788 frames in static mode: median 0.001 %, p90 0.003 % of height)
            assert np.median(error) < 0.001 and np.percentile(error, 90) < 0.005
            assert np.abs(result.landmarks[:, 2] - reference[:, 2]).max() < 0.01
        else:
            # later it crops where the previous frame's (smoothed) landmarks were: measured median 0.4-1.0 %,
            # p90 0.8-2.7 % of height on these frames
            assert np.median(error) < 0.03 and np.percentile(error, 90) < 0.06
        world = result.world
        assert np.linalg.norm((world[23] + world[24]) / 2) < 0.05  # hip-centred, metres
        assert 0.2 < np.linalg.norm(world[11] - world[12]) < 0.6  # shoulder width
        assert 0.9 < result.presence <= 1.0 and result.present


def test_landmark_boxes_replace_the_circle_boxes_on_request(single, mediapipe_landmarks):
    boxes = bt.PersonDetector(box_from_landmarks=True)(single[0])
    assert boxes.shape == (1, 5)
    assert _iou(boxes[0, :4], _box_of(mediapipe_landmarks[0, :, :2])) > 0.95


def test_both_people_of_the_multi_person_video(wheel):
    frames = _frames(wheel, MULTI_VIDEO, max(MULTI_FRAMES) + 1)
    detector = bt.PersonDetector()
    for index in MULTI_FRAMES:
        boxes = detector(frames[index])
        assert boxes.shape == (2, 5) and boxes[0, 4] >= boxes[1, 4]
        people = bt.detect_people(frames[index], detector)
        assert len(people) == 2
        assert _iou(people[0].box, people[1].box) < 0.3  # two people, not one found twice
        height = frames[index].shape[0]
        assert all(0.2 * height < person.box[3] < height for person in people)


def test_interpreters_are_shared_and_calls_from_threads_are_serialised(single):
    first, second = bt.PersonDetector(), bt.PersonDetector(max_people=1)
    assert first._model is second._model
    expected = first(single[0])
    results = [None] * 4

    def run(slot):
        results[slot] = first(single[0])

    threads = [threading.Thread(target=run, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_images_of_other_kinds_are_refused():
    with pytest.raises(ValueError, match="uint8 RGB"):
        bt.detector_input(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        bt.detector_input(np.zeros((10, 10, 3), dtype=np.float32))


# -- tracking through a video ------------------------------------------------------------------------------

# cam04 frames 28-36: the detector finds both people in 28-31 and misses the woman in 32-36 (her best
# detection scores 0.23-0.36 there against the threshold 0.5, 0.8 in frame 28)
TRACKED_FRAMES = range(28, 37)
MISSED_FRAMES = range(32, 37)


@pytest.fixture(scope="module")
def tracked_frames(wheel):
    frames = _frames(wheel, MULTI_VIDEO, max(TRACKED_FRAMES) + 1)
    return [frames[index] for index in TRACKED_FRAMES]


@pytest.fixture(scope="module")
def tracked(tracked_frames):
    """A tracker that has followed both people through the frames, and what it returned for each. It runs
    the detector as MediaPipe does, on every whole frame, so nothing but tracking keeps the woman."""
    tracker = bt.PersonTracker(detect_every=1, tiles=False)
    return tracker, [(tracker(frame), tracker.track_ids, list(tracker.people)) for frame in tracked_frames]


def test_square_tiles_cover_the_longer_side_evenly():
    assert bt.square_tiles(1088, 1920) == [(0, 0, 1088), (0, 832, 1088)]
    assert bt.square_tiles(1920, 1080) == [(0, 0, 1080), (840, 0, 1080)]
    assert bt.square_tiles(100, 350) == [(0, 0, 100), (0, 83, 100), (0, 167, 100), (0, 250, 100)]
    assert bt.square_tiles(640, 480) == [(0, 0, 480), (160, 0, 480)]
    assert bt.square_tiles(500, 500) == bt.square_tiles(500, 600) == []  # not worth it: zoom under 1.25


def test_the_tracker_keeps_both_people_where_the_detector_misses_one(tracked_frames, tracked):
    detector = bt.PersonDetector()
    for index in MISSED_FRAMES:
        assert len(detector(tracked_frames[TRACKED_FRAMES.index(index)])) == 1
    default = bt.PersonTracker()  # the detector every 4th frame, in tiles too
    assert [len(default(frame)) for frame in tracked_frames] == [2] * len(tracked_frames)
    assert len(bt.PersonTracker(max_people=1)(tracked_frames[0])) == 1
    _, results = tracked
    first_ids = sorted(results[0][1])
    assert first_ids == [0, 1]
    for boxes, track_ids, people in results:
        assert boxes.shape == (2, 5) and sorted(track_ids) == first_ids  # the same two tracks throughout
        assert boxes[0, 4] >= boxes[1, 4] >= bt.PRESENCE_THRESHOLD  # scores are presences, best first
        assert not bt._same_person(people[0].pose, people[1].pose)
        for row, person in zip(boxes, people):
            np.testing.assert_allclose(row[:4], person.pose.box)  # the tight box of the landmarks
    # each track stays on its person: from frame to frame its box centre moves by a fraction of its size
    # (measured: at most 0.11; the two centres are 0.29 of the larger box apart, more of the smaller)
    for (_, _, before), (_, later_ids, after) in zip(results, results[1:]):
        for person in before:
            box, moved = person.pose.box, after[later_ids.index(person.track_id)].pose.box
            shift = np.linalg.norm(moved[:2] + moved[2:] / 2 - box[:2] - box[2:] / 2)
            assert shift < 0.2 * box[2:].max()


def test_a_track_ends_when_its_person_is_gone_and_reset_forgets_every_track(tracked_frames, tracked):
    tracker, results = tracked
    last = results[-1][2]
    # black out the woman (the person the detector misses in the next frame too) with the margin the
    # downstream crop takes; what remains of the man beside her is followed as before
    woman = min(last, key=lambda person: person.pose.box[2] * person.pose.box[3])
    man = next(person for person in last if person is not woman)
    frame = tracked_frames[-1].copy()
    x, y, w, h = woman.pose.box
    pad = (CROP_PADDING - 1) / 2
    frame[max(0, int(y - pad * h)):int(y + (1 + pad) * h), max(0, int(x - pad * w)):int(x + (1 + pad) * w)] = 0
    boxes = tracker(frame)
    assert tracker.track_ids == [man.track_id] and boxes.shape == (1, 5)
    assert _iou(boxes[0, :4], man.pose.box) > 0.6

    tracker.reset()
    assert tracker.people == [] and tracker.track_ids == []
    tracker(tracked_frames[0])
    assert sorted(tracker.track_ids) == [0, 1]  # found afresh: new tracks, numbered from 0 again
    assert tracker(np.zeros_like(frame)).shape == (0, 5) and tracker.track_ids == []
