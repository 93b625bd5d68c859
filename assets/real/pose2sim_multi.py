"""The Pose2Sim multi-person demo as a raw multi-view dataset, one sequence per tracked person.

    python -m assets.real.pose2sim_multi --out data/raw/pose2sim_multi [--max-frames N] [--frame-step N] [--report]

Layout and numbers: docs/pose2sim_multi.md. ``Demo_MultiPerson`` of the Pose2Sim wheel is the single-person
demo's four videos with a rendered second person composited in, and its Qualisys calibration.

1. The four videos are decoded in lockstep (PyAV); every ``frame_step``-th frame is an *instant*.
2. In each view, people are found as MediaPipe's video mode finds one (``assets.real.blazepose_tflite``,
   several people at once): each person's landmarks give the next instant's region of interest, and the
   person detector runs every ``detect_every`` instants (and whenever a view has nobody) to add people
   that no carried region covers. BlazePose's detector misses people who overlap another, so a person
   triangulated from other views is projected into a view that lacks them, and the landmark model runs
   on that region: the result is kept when it lies on the projection.
3. Across views (``assets.association.associate``) the detections of each instant are grouped into
   people by epipolar compatibility and reprojection error; over time (``assets.association.track``) the
   people of consecutive instants are linked into tracks. Each kept track is a person with its own
   ``sequence``, so pseudo-GT triangulation sees one person per view and frame.
4. Each person's frame offsets between the videos are estimated on that person's detections, as for
   the single-person demo (``recording.sync_offsets``): the rendered second person is in sync in every
   video, the filmed one is two frames ahead in cam03. Association and tracking need no synchronisation
   (a few frames move a person less than the association threshold); each person's examples are
   numbered by their own synchronised global frames.
5. Everything is written to ``<out>.tmp-<host>-<pid>-<id>`` and swapped into place; a folder built with
   the same settings is left as it is.
"""

import hashlib
import io
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from assets.association import (DEFAULT_MIN_CONFIDENCE, associate, dense_tracks, identity_checks, pixel_thresholds,
                                track)
from assets.cameras import CameraRig
from assets.converters.pose2sim_multi import image_name
from assets.converters.raw_io import RawDataError
from assets.folder_swap import staging_path, swap_into_place
from assets.real import blazepose
from assets.real.blazepose_worker import person_crop_box
from assets.real.cache import POSE2SIM_REQUIREMENT, cache_dir, pose2sim_wheel, read_member, sha256_file
from assets.real.qca import QcaCamera
from assets.real.recording import (DEFAULT_MAX_SYNC_OFFSET, DEFAULT_TEST_FRACTION, already_built,
                                   build_arguments, check_build_arguments, read_calibration, run_build_command,
                                   sync_offsets, test_from_frame, write_calibration)
from assets.triangulation import triangulate

DATASET = "pose2sim_multi"
LAYOUT_VERSION = 1
DEMO = "Pose2Sim/Demo_MultiPerson"
CALIBRATION_MEMBER = f"{DEMO}/calibration/Calib.qca.txt"
JPEG_QUALITY = 90
NUM_JOINTS = blazepose.BLAZEPOSE_33.num_joints

# how a detection was found (``source`` in detections/<camera>.npz)
FROM_DETECTOR, FROM_PREVIOUS, FROM_OTHER_VIEWS = 0, 1, 2
SOURCE_NAMES = ("detector", "previous_instant", "other_views")

_JOINT = blazepose.BLAZEPOSE_33.index
# well-spread body joints that decide association and tracking (the face's eleven landmarks and the
# hands' and feet's extra ones add cost, not information about who is who)
ASSOCIATION_JOINTS = tuple(_JOINT(n) for n in ("nose", "lsho", "rsho", "lelb", "relb", "lwri", "rwri", "lhip", "rhip",
                                                "lkne", "rkne", "lank", "rank"))
TORSO_JOINTS = tuple(_JOINT(n) for n in ("lsho", "rsho", "lhip", "rhip"))
# a person's hip-centred circle covers the body: the farthest projected joint times this (the head's top
# and the hands reach beyond the nose, wrists and ankles that are projected)
_SEED_RADIUS_MARGIN = 1.15
# two results in one view are one person when their landmarks lie this close (median, relative to the box)
_DUPLICATE_DISTANCE = 0.1
# a detector hit whose region centre is this close to a carried region's (relative to its radius) is
# that person again
_SAME_REGION_DISTANCE = 0.3


@dataclass(frozen=True)
class MultiPersonSettings:
    # every n-th video frame is an instant: 4 keeps the demo's build at ~25 s of CPU on 2 cores (every frame: ~100 s)
    frame_step: int = 4
    detect_every: int = 4  # person detector every n instants (and where a view has nobody); Pose2Sim's det_frequency
    crop_size: int = 256
    crop_padding: float = 1.5  # crop side relative to the larger side of the landmarks' box
    min_detection_score: float = 0.5  # the person detector's (MediaPipe's min_detection_confidence)
    min_presence: float = 0.5  # the landmark model's pose flag (MediaPipe's min_tracking_confidence)
    threshold_fraction: float = 0.02  # association: largest median reprojection error, share of the diagonal
    # in seconds, so that they mean the same at any frame step
    max_gap_seconds: float = 0.25  # a track survives this long without its person
    min_track_seconds: float = 0.25  # shorter tracks are dropped: a ghost, a bystander glimpsed in two views, or
    # a person's views split into two sets during a fast move, one of them too far off to be merged back
    max_speed_mm_s: float = 5000.0  # tracking gate: the fastest a person's median joint moves

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_SETTINGS = MultiPersonSettings()


def video_member(camera: str) -> str:
    return f"{DEMO}/videos/{camera}.mp4"


# -- crops ----------------------------------------------------------------------------------------------------

def _binomial_halve(image: np.ndarray, axis: int) -> np.ndarray:
    """uint16: the 5-tap binomial filter (1 4 6 4 1) along ``axis`` at every even index, borders mirrored
    without repeating the edge (reflect-101). With p the padded input, output i is
    p[2i] + 4 p[2i+1] + 6 p[2i+2] + 4 p[2i+3] + p[2i+4]: five strided views, no transposed copy."""
    size = image.shape[axis]
    count = (size + 1) // 2
    beyond = np.arange(size, 2 * count + 3)  # indices past the far edge, mirrored back inside
    padded = np.concatenate([np.take(image, [min(2, size - 1), min(1, size - 1)], axis=axis), image,
                             np.take(image, np.clip(2 * (size - 1) - beyond, 0, size - 1), axis=axis)], axis=axis)

    def every_second(start):
        index = [slice(None)] * image.ndim
        index[axis] = slice(start, start + 2 * count, 2)
        return padded[tuple(index)]

    out = np.add(every_second(0), every_second(4), dtype=np.uint16)
    scratch = np.multiply(every_second(2), 6, dtype=np.uint16)
    out += scratch
    np.add(every_second(1), every_second(3), out=scratch, dtype=np.uint16)
    scratch <<= 2
    out += scratch
    return out


def pyramid_down(image: np.ndarray) -> np.ndarray:
    """One Gaussian pyramid level of a uint8 image [H, W, C], as OpenCV's ``pyrDown``: the 5-tap binomial
    filter (1 4 6 4 1)/16 in both directions with reflect-101 borders, every second pixel kept (output
    pixel i sits on input pixel 2i), rounded. Integer arithmetic: both passes' sums fit in uint16 (<= 256 * 255)."""
    both = _binomial_halve(_binomial_halve(image, 0), 1)
    both += 128
    both >>= 8
    return both.astype(np.uint8)


def _linear_along(image: np.ndarray, coordinates: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``image`` (float) at ``coordinates`` [n] along ``axis``, pixel centres at
    integers, zero beyond the edges (a sample between the edge pixel and the outside blends with zero)."""
    size = image.shape[axis]
    widths = [(0, 0)] * image.ndim
    widths[axis] = (1, 1)
    padded = np.pad(image, widths)  # index k + 1 holds pixel k
    inside = (coordinates > -1) & (coordinates < size)
    position = np.where(inside, coordinates + 1, 0.0)  # in (0, size + 1): low and low + 1 are in the padding
    low = np.minimum(np.floor(position).astype(np.int64), size)
    fraction = (position - low).astype(np.float32)
    shape = [1] * image.ndim
    shape[axis] = len(coordinates)
    fraction = fraction.reshape(shape)
    out = np.take(padded, low, axis=axis) * (1 - fraction) + np.take(padded, low + 1, axis=axis) * fraction
    return out * inside.reshape(shape)


def crop_image(frame: np.ndarray, box, size: int) -> np.ndarray:
    """``frame``'s region ``box`` (x, y, w, h) resampled to size x size, black outside the frame.

    Output pixel i shows frame point x + i * w / size (the map ``Camera.cropped`` describes), as
    ``blazepose_worker.crop`` does with OpenCV: large downscales first go down a Gaussian pyramid (each level
    halves the image, level pixel i on pixel 2i below) so that bilinear sampling does not alias. Only the
    frame region under the box (plus the filters' reach) goes down the pyramid, aligned to its grid.
    """
    x0, y0, w, h = (float(v) for v in box)
    levels = max(0, int(math.floor(math.log2(max(w, h) / size))))
    factor = 2 ** levels
    height, width = frame.shape[:2]
    # each level's filter reaches 2 pixels of the level below; 4 pixels of the top level cover every level
    margin = 4 * factor
    left = max(0, int(math.floor((x0 - margin) / factor)) * factor)
    top = max(0, int(math.floor((y0 - margin) / factor)) * factor)
    right = min(width, int(math.ceil((x0 + w + margin) / factor)) * factor)
    bottom = min(height, int(math.ceil((y0 + h + margin) / factor)) * factor)
    if right <= left or bottom <= top:
        return np.zeros((size, size, frame.shape[2]), dtype=np.uint8)
    region = frame[top:bottom, left:right]
    for _ in range(levels):
        region = pyramid_down(region)
    steps = np.arange(size, dtype=np.float64)
    u = (x0 + steps * w / size - left) / factor
    v = (y0 + steps * h / size - top) / factor
    # bilinear sampling on an axis-aligned grid is two linear passes (the bilinear kernel is their
    # product), each over a small array; outside the region is outside the frame (the region covers the
    # box): black, as OpenCV's BORDER_CONSTANT
    rows = _linear_along(region.astype(np.float32), v, axis=0)
    sampled = _linear_along(rows, u, axis=1)
    return np.clip(np.rint(sampled), 0, 255).astype(np.uint8)


# -- detection in one view, and across views -------------------------------------------------------------------

@dataclass
class ViewDetection:
    landmarks: np.ndarray  # [33, 3] (u, v, visibility) pixels of the video frame
    presence: float
    source: int  # FROM_*
    next_roi: object  # blazepose_tflite.PoseRoi for the next instant


def _same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two landmark sets [33, 3] of one view are one person (two regions that found the same body)."""
    low, high = np.minimum(a[:, :2].min(0), b[:, :2].min(0)), np.maximum(a[:, :2].max(0), b[:, :2].max(0))
    scale = max(float(np.sqrt(np.prod(high - low))), 1.0)
    return float(np.median(np.linalg.norm(a[:, :2] - b[:, :2], axis=-1))) < _DUPLICATE_DISTANCE * scale


def _without_duplicates(found: list[ViewDetection]) -> list[ViewDetection]:
    kept = []
    for candidate in sorted(found, key=lambda d: -d.presence):
        if not any(_same_person(candidate.landmarks, other.landmarks) for other in kept):
            kept.append(candidate)
    return kept


def seed_roi(uv: np.ndarray, hips, shoulders, image_size):
    """The landmark model's region for a person projected into a view: ``uv`` [K, 2] projected joints,
    ``hips``/``shoulders`` indices into them. A square around the hips' centre that covers every joint,
    turned so the shoulders are up, as MediaPipe's detector would give; None when the centre is outside
    the image or the projection is degenerate."""
    from assets.real.blazepose_tflite import PoseRoi

    if not np.isfinite(uv).all():
        uv = uv[np.isfinite(uv).all(axis=-1)]
        if len(uv) < 4:
            return None
    centre = uv[list(hips)].mean(axis=0) if np.isfinite(uv[list(hips)]).all() else None
    if centre is None or not (0 <= centre[0] < image_size[0] and 0 <= centre[1] < image_size[1]):
        return None
    up = uv[list(shoulders)].mean(axis=0) - centre
    radius = float(np.linalg.norm(uv - centre, axis=-1).max()) * _SEED_RADIUS_MARGIN
    if not np.isfinite(up).all() or np.linalg.norm(up) < 1e-6 or radius < 8:
        return None
    return PoseRoi.from_alignment_points(centre, centre + up / np.linalg.norm(up) * radius)


class MultiViewDetector:
    """Finds everyone in the synchronised frames of calibrated views, instant after instant (see the module)."""

    def __init__(self, cameras: list[QcaCamera], settings: MultiPersonSettings, model_cache: Path | None = None):
        from assets.real.blazepose_tflite import (DETECTOR_MODEL, LANDMARK_MODEL, Landmarker, PersonDetector)
        from assets.real.cache import mediapipe_model

        self.cameras = [q.camera for q in cameras]
        self.image_sizes = [q.image_size for q in cameras]
        self.settings = settings
        self.detector = PersonDetector(mediapipe_model(DETECTOR_MODEL, model_cache),
                                       score_threshold=settings.min_detection_score)
        self.landmarker = Landmarker(mediapipe_model(LANDMARK_MODEL, model_cache))
        self.threshold = pixel_thresholds(self.cameras, self.image_sizes, fraction=settings.threshold_fraction)
        self.carried = [[] for _ in cameras]  # per view: PoseRoi of the people found at the last instant
        self.failed_seeds = [[] for _ in cameras]  # per view: PoseRoi of projections where nobody was found
        self.instants = 0
        self.calls = {"detector": 0, "landmarks": 0, "seeded": 0, "seed_rejected": 0}
        joints = list(ASSOCIATION_JOINTS)
        self._hips = [joints.index(_JOINT("lhip")), joints.index(_JOINT("rhip"))]
        self._shoulders = [joints.index(_JOINT("lsho")), joints.index(_JOINT("rsho"))]

    def _landmarks(self, image, roi, source) -> ViewDetection | None:
        self.calls["landmarks"] += 1
        result = self.landmarker(image, roi)
        if result.presence < self.settings.min_presence:
            return None
        return ViewDetection(result.landmarks.astype(np.float64), result.presence, source, result.next_roi)

    def _in_view(self, image, view: int, run_detector: bool) -> list[ViewDetection]:
        carried = self.carried[view]
        found = [d for roi in carried if (d := self._landmarks(image, roi, FROM_PREVIOUS)) is not None]
        if run_detector or not carried:
            self.calls["detector"] += 1
            for detection in self.detector.detect(image):
                roi = detection.roi
                if any(np.hypot(*np.subtract(roi.centre, c.centre)) < _SAME_REGION_DISTANCE * c.radius
                       for c in carried):
                    continue  # the person the carried region already follows
                if (d := self._landmarks(image, roi, FROM_DETECTOR)) is not None:
                    found.append(d)
        return _without_duplicates(found)

    def __call__(self, images: list) -> list[list[ViewDetection]]:
        """Detections [view][k] of one instant; ``images`` [view] uint8 RGB frames (None: the view has no frame)."""
        run_detector = self.instants % self.settings.detect_every == 0
        self.instants += 1
        per_view = [self._in_view(image, v, run_detector) if image is not None else []
                    for v, image in enumerate(images)]
        confirmed = self._seed_from_other_views(images, per_view, retry=run_detector)
        # the next instant follows the people the views agree on, and the detector's new finds (once): a
        # region that keeps following a body no other view confirms (a bystander, a ghost, a detection
        # gone wrong) costs a landmark run per instant for nothing
        self.carried = [[d.next_roi for d in view if d.source != FROM_PREVIOUS or id(d) in confirmed]
                        for view in per_view]
        return per_view

    def _seed_from_other_views(self, images, per_view, retry: bool) -> set:
        """Look for each person triangulated from other views in the views that lack them; returns the ids
        of the detections that belong to a person (associated, or seeded).

        A region where the landmark model found nothing on the projection is not tried again until the
        next detector instant (``retry``): a person that a view cannot make out usually stays so for a while.
        """
        rows = [(v, k) for v, view in enumerate(per_view) for k in range(len(view))]
        failed = [[] if retry else previous for previous in self.failed_seeds]
        self.failed_seeds = failed
        if len(rows) < 2:
            return set()
        landmarks = np.stack([per_view[v][k].landmarks for v, k in rows])
        association = associate(np.zeros(len(rows), dtype=int), np.array([v for v, _ in rows]), landmarks[..., :2],
                                landmarks[..., 2], self.cameras, image_sizes=self.image_sizes,
                                threshold_fraction=self.settings.threshold_fraction, joints=ASSOCIATION_JOINTS)
        confirmed = {id(per_view[v][k]) for (v, k), g in zip(rows, association.group_of_detection) if g >= 0}
        rig = CameraRig(self.cameras)
        for g in range(len(association.instant)):
            projected = rig.world_to_image(association.points3d[g])  # [C, K, 2]
            for view in np.flatnonzero(association.detection[g] < 0):
                if images[view] is None:
                    continue
                roi = seed_roi(projected[view], self._hips, self._shoulders, self.image_sizes[view])
                if roi is None or any(np.hypot(*np.subtract(roi.centre, f.centre)) < _SAME_REGION_DISTANCE * f.radius
                                      for f in failed[view]):
                    continue
                found = self._landmarks(images[view], roi, FROM_OTHER_VIEWS)
                if found is None or not self._on_projection(found, projected[view], view):
                    self.calls["seed_rejected"] += 1
                    failed[view].append(roi)
                    continue
                # an unassociated detection of the same body (its landmarks too far off to be associated)
                # gives way to the one that agrees with the other views
                per_view[view] = [d for d in per_view[view] if not _same_person(d.landmarks, found.landmarks)]
                per_view[view].append(found)
                confirmed.add(id(found))
                self.calls["seeded"] += 1
        return confirmed

    def _on_projection(self, found: ViewDetection, projected: np.ndarray, view: int) -> bool:
        points = found.landmarks[list(ASSOCIATION_JOINTS)]
        confident = points[:, 2] >= DEFAULT_MIN_CONFIDENCE
        if confident.sum() < 4:
            return False
        distance = np.linalg.norm(points[confident, :2] - projected[confident], axis=-1)
        return bool(np.median(distance) < self.threshold[view])


# -- decoding -------------------------------------------------------------------------------------------------

def _open_video(data: bytes, where: str):
    import av

    try:
        container = av.open(io.BytesIO(data))
        stream = container.streams.video[0]
    except (av.FFmpegError, IndexError) as exc:
        raise RawDataError(where, None, "a decodable video", f"{type(exc).__name__}: {exc}") from None
    stream.thread_type = "AUTO"
    return container, stream


def decoded_instants(videos: dict[str, bytes], sources: dict[str, str], frame_step: int, max_frames: int | None):
    """(video frame, {camera: uint8 RGB frame or None}) for every ``frame_step``-th frame of the videos,
    decoded in lockstep; ends with the longest video (or ``max_frames``). ``sources`` names each video in
    errors."""
    import av

    opened = {name: _open_video(data, sources[name]) for name, data in videos.items()}
    decoders = {name: container.decode(stream) for name, (container, stream) in opened.items()}
    try:
        frame = 0
        while max_frames is None or frame < max_frames:
            images = {}
            for name, decoder in decoders.items():
                try:
                    decoded = next(decoder, None)
                except av.FFmpegError as exc:
                    raise RawDataError(sources[name], None, "a decodable video", f"frame {frame}: {exc}") from None
                images[name] = decoded
            if all(image is None for image in images.values()):
                break
            if frame % frame_step == 0:
                yield frame, {name: None if image is None else image.to_ndarray(format="rgb24")
                              for name, image in images.items()}
            frame += 1
    finally:
        for container, _ in opened.values():
            container.close()


def video_properties(data: bytes, where: str) -> dict:
    container, stream = _open_video(data, where)
    with container:
        return {"video_size": [stream.codec_context.width, stream.codec_context.height],
                "fps": float(stream.average_rate), "frames": int(stream.frames)}


# -- association, tracking, synchronisation ----------------------------------------------------------------------

@dataclass
class DetectionTable:
    """Every detection of the recording: one row per person found in one view at one video frame."""

    video_frame: np.ndarray  # [D]
    view: np.ndarray  # [D]
    landmarks: np.ndarray  # [D, 33, 3]
    presence: np.ndarray  # [D]
    source: np.ndarray  # [D]
    crop_boxes: np.ndarray  # [D, 4]
    image_names: list  # [D] file names of the crops as first written

    def __len__(self) -> int:
        return len(self.video_frame)


@dataclass
class People:
    """Association and tracking of a detection table, and the people's synchronisation."""

    group: np.ndarray  # [D] association group (people of one instant), -1 = unassociated
    person: np.ndarray  # [D] kept track, -1 = none
    num_people: int
    candidates: int  # candidate sets the association triangulated
    offsets: list  # per person: [C] frame offsets (global frame = video frame - offset), None = not estimated
    instant: np.ndarray = None  # [D] global frame of each detection (its person's offsets; untracked: video frame)

    def synchronised(self, table: "DetectionTable", num_views: int) -> "People":
        zero = np.zeros(num_views, dtype=np.int64)
        per_person = np.stack([np.asarray(o if o is not None else zero) for o in self.offsets] + [zero])  # [P + 1, C]
        self.instant = table.video_frame - per_person[self.person, table.view]  # person -1 takes the last row
        return self


def identify_people(table: DetectionTable, cameras, image_sizes, settings: MultiPersonSettings, fps: float) -> People:
    """Association by video frame, then tracking. Videos a few frames out of sync still associate: the
    threshold is well above a person's motion in a few frames, and a fast move that splits a person's
    views into two sets is merged back (``associate``'s merge_distance_mm)."""
    association = associate(table.video_frame, table.view, table.landmarks[..., :2], table.landmarks[..., 2], cameras,
                            image_sizes=image_sizes, threshold_fraction=settings.threshold_fraction,
                            joints=ASSOCIATION_JOINTS)
    # instants are every frame_step-th video frame: the tracker counts instants
    step = settings.frame_step
    per_second = fps / step
    # a short build (--max-frames) keeps a person seen at half its instants, however few
    min_length = min(math.ceil(settings.min_track_seconds * per_second), max(1, len(np.unique(table.video_frame)) // 2))
    tracks = track(association.instant // step, association.points3d, max_step_mm=settings.max_speed_mm_s / per_second,
                   max_gap=math.ceil(settings.max_gap_seconds * per_second), min_length=min_length)
    person = np.where(association.group_of_detection >= 0, tracks[np.maximum(association.group_of_detection, 0)], -1)
    num_people = int(tracks.max()) + 1 if len(tracks) and tracks.max() >= 0 else 0
    return People(group=association.group_of_detection, person=person, num_people=num_people,
                  candidates=association.candidates, offsets=[None] * num_people)


def person_landmarks(table: DetectionTable, people: People, person: int, num_views: int) -> np.ndarray:
    """One person's landmarks [C, F, 33, 3] by processed video frame (NaN / 0 where not found)."""
    processed = np.unique(table.video_frame)
    out = np.full((num_views, len(processed), NUM_JOINTS, 3), np.nan)
    out[..., 2] = 0.0
    rows = np.flatnonzero(people.person == person)
    out[table.view[rows], np.searchsorted(processed, table.video_frame[rows])] = table.landmarks[rows]
    return out


def synchronise(table: DetectionTable, people: People, cameras: list[QcaCamera], settings: MultiPersonSettings,
                max_sync_offset: int, report) -> People:
    """Each person's frame offsets, estimated as for the single-person demo (``recording.sync_offsets``) on
    that person's detections. Per person, because the demo's second person is rendered into the videos in
    sync while the filmed one is not; a person seen at too few instants is taken as synchronised."""
    step = settings.frame_step
    # offsets are searched in processed frames: with a frame step they are multiples of it
    max_offset = math.ceil(max_sync_offset / step) if max_sync_offset > 0 else 0
    for person in range(people.num_people):
        landmarks = person_landmarks(table, people, person, len(cameras))
        seen_twice = int(((landmarks[..., 2] > 0).any(axis=-1).sum(axis=0) >= 2).sum())
        if max_offset <= 0 or seen_twice < 4 * max_offset:
            report(f"person {person}: frame offsets not estimated ({seen_twice} instants in two or more views, max "
                   f"offset {max_sync_offset}); assuming synchronised")
            continue
        found = sync_offsets(landmarks, cameras, max_offset, lambda _: None)
        people.offsets[person] = None if found is None else [o * step for o in found]
        if found is not None:
            report(f"person {person}: frame offsets (global frame = video frame - offset): "
                   + ", ".join(f"{q.name} {o:+d}" for q, o in zip(cameras, people.offsets[person])))
    return people.synchronised(table, len(cameras))


# -- statistics --------------------------------------------------------------------------------------------------

def recording_statistics(table: DetectionTable, people: People, cameras: list[QcaCamera], settings: MultiPersonSettings,
                         fps: float) -> dict:
    """What the manifest reports: detections, association, tracks, identity checks, reprojection errors."""
    names = [q.name for q in cameras]
    plain = [q.camera for q in cameras]
    sizes = [q.image_size for q in cameras]
    instants = np.unique(people.instant)
    tracked = people.person >= 0
    points2d, confidence = dense_tracks(people.person, people.instant, table.view, table.landmarks[..., :2],
                                        table.landmarks[..., 2], people.num_people, len(cameras), instants)
    # the pseudo-GT's triangulation (robust, default threshold) of every person at every instant
    result = triangulate(points2d, confidence, plain, image_sizes=sizes)
    present = (confidence > 0).any(axis=-1).any(axis=0)  # [P, I]: the person has a detection
    triangulated = np.isfinite(result.points3d).all(axis=-1)  # [P, I, J]
    errors = result.reprojection_error[np.isfinite(result.reprojection_error)]
    checks = identity_checks(points2d, confidence, plain, result.points3d, interval_s=settings.frame_step / fps,
                             torso_joints=TORSO_JOINTS, max_speed_mm_s=settings.max_speed_mm_s)
    views = (confidence > 0).any(axis=-1).sum(axis=0)  # [P, I]
    tracks = []
    for p in range(people.num_people):
        seen = instants[present[p]]
        tracks.append({"person": p, "instants": int(present[p].sum()), "first_frame": int(seen.min()),
                       "last_frame": int(seen.max()), "mean_views": round(float(views[p][present[p]].mean()), 2),
                       "joints_triangulated_fraction": round(float(triangulated[p][present[p]].mean()), 4)})
    people_per_instant = np.bincount(present.sum(axis=0), minlength=people.num_people + 1)
    return {
        "instants": int(len(instants)),
        "detections": int(len(table)),
        "detections_per_view": {n: int((table.view == c).sum()) for c, n in enumerate(names)},
        "detections_by_source": {s: int((table.source == i).sum()) for i, s in enumerate(SOURCE_NAMES)},
        "associated_fraction": round(float((people.group >= 0).mean()), 4) if len(table) else 0.0,
        "tracked_fraction": round(float(tracked.mean()), 4) if len(table) else 0.0,
        "tracked_per_view": {n: int((tracked & (table.view == c)).sum()) for c, n in enumerate(names)},
        "candidate_groups": people.candidates,
        "people": people.num_people,
        "people_per_instant": {int(k): int(v) for k, v in enumerate(people_per_instant)},
        "tracks": tracks,
        "joints_triangulated_fraction": round(float(triangulated[present].mean()), 4) if present.any() else 0.0,
        "reprojection_error_px": {f"p{q}": round(float(np.percentile(errors, q)), 2) for q in (50, 90, 95, 99)}
        if errors.size else {},
        "identity": checks,
    }


# -- the build ---------------------------------------------------------------------------------------------------

def _detect(videos: dict[str, bytes], sources: dict[str, str], cameras: list[QcaCamera], staging: Path,
            settings: MultiPersonSettings, max_frames: int | None, cache: Path | None,
            report) -> tuple[DetectionTable, dict]:
    detector = MultiViewDetector(cameras, settings, cache)
    names = [q.name for q in cameras]
    rows = {key: [] for key in ("video_frame", "view", "landmarks", "presence", "source", "crop_boxes", "image_names")}
    for name in names:
        (staging / "images" / name).mkdir(parents=True)
    seconds = {"decode": 0.0, "detect": 0.0, "crops": 0.0}
    started = last = time.perf_counter()
    instants = 0
    for video_frame, images in decoded_instants(videos, sources, settings.frame_step, max_frames):
        decoded = time.perf_counter()
        seconds["decode"] += decoded - last
        for name, image in images.items():
            expected = cameras[names.index(name)].image_size
            if image is not None and (image.shape[1], image.shape[0]) != tuple(expected):
                raise RawDataError(sources[name], None, f"{expected[0]}x{expected[1]} frames (the calibration's)",
                                   f"frame {video_frame} of {image.shape[1]}x{image.shape[0]}")
        found = detector([images[n] for n in names])
        detected = time.perf_counter()
        seconds["detect"] += detected - decoded
        for view, detections in enumerate(found):
            for slot, detection in enumerate(detections):
                box = person_crop_box(detection.landmarks[:, :2], settings.crop_padding)
                file_name = f"{video_frame:06d}_{slot}.jpg"  # renamed after its person once tracked
                crop = crop_image(images[names[view]], box, settings.crop_size)
                _save_jpeg(crop, staging / "images" / names[view] / file_name)
                for key, value in (("video_frame", video_frame), ("view", view), ("landmarks", detection.landmarks),
                                   ("presence", detection.presence), ("source", detection.source),
                                   ("crop_boxes", box), ("image_names", file_name)):
                    rows[key].append(value)
        last = time.perf_counter()
        seconds["crops"] += last - detected
        instants += 1
        if instants % 10 == 0:
            report(f"{instants} instants (video frame {video_frame}), {instants / (last - started):.2f} instants/s, "
                   f"{len(rows['view'])} detections")
    if not instants:
        raise RawDataError(DEMO, None, "decodable video frames", "none")
    table = DetectionTable(
        video_frame=np.array(rows["video_frame"], dtype=np.int64), view=np.array(rows["view"], dtype=np.int64),
        landmarks=np.array(rows["landmarks"], dtype=np.float64).reshape(-1, NUM_JOINTS, 3),
        presence=np.array(rows["presence"], dtype=np.float64), source=np.array(rows["source"], dtype=np.int64),
        crop_boxes=np.array(rows["crop_boxes"], dtype=np.float64).reshape(-1, 4), image_names=rows["image_names"])
    summary = {"instants": instants, "seconds": {k: round(v, 2) for k, v in seconds.items()},
               "model_calls": dict(detector.calls)}
    return table, summary


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, quality=JPEG_QUALITY)


def _write_detections(staging: Path, table: DetectionTable, people: People, names: list[str], video: dict) -> None:
    """detections/<camera>.npz, one row per (video frame, person); crops of tracked people renamed after
    them, the others' deleted (an untracked detection is kept as numbers only)."""
    (staging / "detections").mkdir()
    for view, name in enumerate(names):
        rows = np.flatnonzero(table.view == view)
        rows = rows[np.lexsort((people.person[rows] < 0, people.person[rows], table.video_frame[rows]))]
        folder = staging / "images" / name
        for row in rows:
            first = folder / table.image_names[row]
            if people.person[row] >= 0:
                first.rename(folder / image_name(int(table.video_frame[row]), int(people.person[row])))
            else:
                first.unlink()
        np.savez(staging / "detections" / f"{name}.npz",
                 frames=table.video_frame[rows].astype(np.int32), person=people.person[rows].astype(np.int32),
                 landmarks=table.landmarks[rows].astype(np.float32),
                 crop_boxes=table.crop_boxes[rows].astype(np.float32),
                 presence=table.presence[rows].astype(np.float32), source=table.source[rows].astype(np.int8),
                 video_size=np.array(video[name]["video_size"], dtype=np.int32), fps=np.float64(video[name]["fps"]))


def build(
    out,
    *,
    cache: Path | None = None,
    max_frames: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    max_sync_offset: int = DEFAULT_MAX_SYNC_OFFSET,
    settings: MultiPersonSettings = DEFAULT_SETTINGS,
    force: bool = False,
    report=print,
) -> Path:
    """Acquire, detect, associate, track and write the raw ``pose2sim_multi`` dataset at ``out``."""
    from importlib.metadata import version

    out = Path(out)
    check_build_arguments(test_fraction, max_frames)
    if settings.frame_step < 1 or settings.detect_every < 1:
        raise ValueError(f"frame_step and detect_every: expected whole numbers >= 1, got {settings.frame_step} "
                         f"and {settings.detect_every}")
    request = {"layout_version": LAYOUT_VERSION, "source": POSE2SIM_REQUIREMENT, "max_frames": max_frames,
               "test_fraction": test_fraction, "max_sync_offset": max_sync_offset,
               "detector": {"runtime": f"ai-edge-litert=={version('ai-edge-litert')}",
                            "models": "mediapipe==0.10.14 pose_detection + pose_landmark_full"},
               **settings.as_dict()}
    if not force and already_built(out, request):
        report(f"{out}: already built with these settings (use --force to rebuild)")
        return out
    cache = Path(cache or cache_dir())
    wheel = pose2sim_wheel(cache)
    report(f"source: {wheel}")
    qca_bytes, cameras = read_calibration(wheel, CALIBRATION_MEMBER)
    names = [q.name for q in cameras]
    videos = {name: read_member(wheel, video_member(name)) for name in names}
    sources = {name: f"{wheel}!{video_member(name)}" for name in names}
    video = {}
    for name, data in videos.items():
        video[name] = {**video_properties(data, sources[name]), "video_sha256": hashlib.sha256(data).hexdigest()}
        calibrated = cameras[names.index(name)].image_size
        if tuple(video[name]["video_size"]) != tuple(calibrated):
            raise RawDataError(sources[name], None,
                               f"{calibrated[0]}x{calibrated[1]} frames (the calibration window)",
                               "x".join(map(str, video[name]["video_size"])))
    fps = video[names[0]]["fps"]

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_path(out)
    try:
        started = time.perf_counter()
        table, detection = _detect(videos, sources, cameras, staging, settings, max_frames, cache, report)
        detection_seconds = time.perf_counter() - started
        started = time.perf_counter()
        people = identify_people(table, [q.camera for q in cameras], [q.image_size for q in cameras], settings, fps)
        if not people.num_people:
            raise RawDataError(f"{wheel}!{DEMO}", None, "people that two or more views agree on",
                               f"none in {len(table)} detections")
        association_seconds = time.perf_counter() - started
        started = time.perf_counter()
        people = synchronise(table, people, cameras, settings, max_sync_offset, report)
        sync_seconds = time.perf_counter() - started
        started = time.perf_counter()
        statistics = recording_statistics(table, people, cameras, settings, fps)
        statistics_seconds = time.perf_counter() - started
        num_frames = int(people.instant.max()) + 1
        write_calibration(staging / "calibration", qca_bytes, cameras, {n: video[n]["video_size"] for n in names},
                          f"{POSE2SIM_REQUIREMENT}:{CALIBRATION_MEMBER}")
        _write_detections(staging, table, people, names, video)
        manifest = {
            "dataset": DATASET,
            "layout_version": LAYOUT_VERSION,
            "skeleton": blazepose.SKELETON_NAME,
            "cameras": names,
            "people": [{"person": p, "subject": f"person{p}", "sequence": f"{DEMO.split('/')[-1]}/person{p}",
                        # global frame = video frame - offset
                        "frame_offsets": dict(zip(names, offsets or [0] * len(names))),
                        "frame_offsets_estimated": offsets is not None}
                       for p, offsets in enumerate(people.offsets)],
            "num_frames": num_frames,  # global frames, 0 .. num_frames - 1
            "frame_step": settings.frame_step,
            "fps": fps,
            "test_from_frame": test_from_frame(num_frames, test_fraction),
            "statistics": statistics,
            "videos": video,
            "detection": detection,
            "seconds": {"detection": round(detection_seconds, 2),
                        "association_and_tracking": round(association_seconds, 2),
                        "synchronisation": round(sync_seconds, 2), "statistics": round(statistics_seconds, 2)},
            "source": {"requirement": POSE2SIM_REQUIREMENT, "wheel": wheel.name, "wheel_sha256": sha256_file(wheel),
                       "demo": DEMO},
            "build": request,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report(f"{out}: {people.num_people} people over {detection['instants']} instants x {len(names)} cameras; "
           f"detection {detection_seconds:.1f} s, association and tracking {association_seconds:.1f} s, "
           f"synchronisation {sync_seconds:.1f} s, statistics {statistics_seconds:.1f} s")
    return out


def print_report(raw_root, report=print) -> dict:
    """The manifest's statistics, readably."""
    manifest = json.loads((Path(raw_root) / "manifest.json").read_text())
    stats = manifest["statistics"]
    identity = stats["identity"]
    report(f"{stats['instants']} instants, {stats['detections']} detections "
           f"({', '.join(f'{k} {v}' for k, v in stats['detections_per_view'].items())}; by source "
           f"{', '.join(f'{k} {v}' for k, v in stats['detections_by_source'].items())})")
    report(f"associated {stats['associated_fraction']:.1%}, on kept tracks {stats['tracked_fraction']:.1%}; "
           f"{stats['people']} people; people per instant {stats['people_per_instant']}")
    for entry in stats["tracks"]:
        report(f"  person {entry['person']}: {entry['instants']} instants (frames {entry['first_frame']}.."
               f"{entry['last_frame']}), {entry['mean_views']} views on average, "
               f"{entry['joints_triangulated_fraction']:.1%} of joints triangulated")
    report(f"joints triangulated {stats['joints_triangulated_fraction']:.1%}; reprojection error px: "
           + ", ".join(f"{k} {v}" for k, v in stats["reprojection_error_px"].items()))
    report(f"identity switches: 2D {identity['switches_2d']} of {identity['checked_2d']} checked detections "
           f"{identity['switches_2d_per_view']}; 3D jumps {identity['jumps_3d']} of {identity['checked_3d']} steps "
           f"(limit {identity['jump_limit_mm']:.0f} mm, largest {identity['max_torso_step_mm']} mm)")
    for entry in manifest["people"]:
        report(f"  person {entry['person']} frame offsets {entry['frame_offsets']}"
               + ("" if entry["frame_offsets_estimated"] else " (not estimated)"))
    return stats


def main(argv=None) -> int:
    parser = build_arguments("assets.real.pose2sim_multi", __doc__.splitlines()[0], "data/raw/pose2sim_multi")
    parser.add_argument("--frame-step", type=int, default=DEFAULT_SETTINGS.frame_step,
                        help="use every n-th video frame (default: %(default)s)")
    parser.add_argument("--detect-every", type=int, default=DEFAULT_SETTINGS.detect_every,
                        help="run the person detector every n instants (default: %(default)s)")
    parser.add_argument("--crop-size", type=int, default=DEFAULT_SETTINGS.crop_size)
    parser.add_argument("--report", action="store_true", help="then print the association and tracking statistics")
    args = parser.parse_args(argv)
    settings = MultiPersonSettings(frame_step=args.frame_step, detect_every=args.detect_every,
                                   crop_size=args.crop_size)
    return run_build_command(
        lambda: build(args.out, cache=args.cache, max_frames=args.max_frames, test_fraction=args.test_fraction,
                      max_sync_offset=args.max_sync_offset, settings=settings, force=args.force),
        (lambda: print_report(args.out)) if args.report else None)


if __name__ == "__main__":
    sys.exit(main())
