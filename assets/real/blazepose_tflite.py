"""Multi-person BlazePose without MediaPipe: its two TFLite models run with LiteRT (``ai-edge-litert``).

MediaPipe's Python Pose solution finds one person per frame. This module runs the models that ship in the
MediaPipe wheel (found in the cached MediaPipe virtualenv, ``assets.real.cache.mediapipe_model``) and
reproduces the graphs around them in NumPy, keeping every detection:

- ``PersonDetector``: ``pose_detection.tflite`` as ``pose_detection_cpu.pbtxt`` runs it (letterboxed
  224x224 input, SSD anchors, box decoding, weighted non-maximum suppression, letterbox removal), plus
  the full-body region of interest of ``pose_detection_to_roi.pbtxt``. Called on an image it returns
  person boxes [N, 5] = (x_left, y_top, width, height, score), the interface of ``model.detection``.
- ``Landmarker``: ``pose_landmark_full.tflite`` as ``pose_landmark_by_roi_cpu.pbtxt`` runs it (rotated
  256x256 crop of the region, landmark decoding, heatmap refinement, projection back into the image,
  world landmarks rotated like ``WorldLandmarkProjectionCalculator``).
- ``detect_people``: both, for every person in an image.
- ``PersonTracker``: both through a video, for several people at once, as MediaPipe's video mode follows one
  (each person's landmarks give the next frame's region; the detector, every few frames, adds the people
  nobody follows yet). The same interface as ``PersonDetector``, with track ids; ``dozens detect`` uses it
  for videos.

Every graph parameter below is a named constant that cites its source; all were read from
google-ai-edge/mediapipe at tag v0.10.14 (the wheel's version): the pbtxt files named above,
``pose_landmark/tensors_to_pose_landmarks_and_segmentation.pbtxt``,
``pose_landmark/pose_landmarks_and_segmentation_inverse_projection.pbtxt``,
``pose_landmark/pose_landmarks_to_roi.pbtxt`` and the calculators they name (``calculators/tflite/
ssd_anchors_calculator.cc``, ``calculators/tensor/{image_to_tensor_utils, image_to_tensor_converter_opencv,
tensors_to_detections, tensors_to_landmarks}_calculator.cc``, ``calculators/util/{non_max_suppression,
detection_letterbox_removal, alignment_points_to_rects, detections_to_rects, rect_transformation,
refine_landmarks_from_heatmap, landmark_projection, world_landmark_projection}_calculator.cc``), proto
defaults included.

Coordinates: image pixels with pixel centres at integer coordinates, as everywhere in the project.
MediaPipe's normalised coordinates run from the image's left/top edge, so u = x * W - 0.5. The image
samplers reproduce MediaPipe's OpenCV ``warpPerspective`` (bilinear, 1/32-pixel coordinate steps,
rounded to uint8 before scaling), border included: zeros for the detector, replicated edge for the
landmarker.

Interpreters are created once per process and model file (creating one takes ~0.1 s) and shared by all
instances; each model runs under its own lock, so calls from several threads are safe but run one at a
time per model.

``PoseLandmarks.next_roi`` is the region MediaPipe's video mode derives from the auxiliary landmarks, but
unsmoothed: MediaPipe always passes them through a one-euro filter first (pose_landmark_filtering.pbtxt),
which this module does not reproduce.

Validation on the Pose2Sim demo videos (wheel in ``data/cache``; Demo_SinglePerson and Demo_MultiPerson,
4 cameras x 100 frames each, 1080/1088 x 1920, decoded with PyAV: the same pixels as the OpenCV decoder
of MediaPipe's worker, checked on a frame):

- Against MediaPipe's graph, same frames (mp.solutions.pose with static_image_mode, i.e. detection then
  landmarks on every frame; 788 frames where both find a pose, none where only one does): detections and
  ROIs equal to 1e-3 px; landmarks median 0.001 %, p90 0.004 %, p99 0.04 % of the person's height
  (99.4 % of landmarks within 0.5 px). 19 frames have a landmark off by more than 2 px (up to 12 % of the
  height): one hand or foot landmark whose heatmap refinement or regression flips on float-level
  differences between LiteRT's and MediaPipe's TFLite kernels.
- Against the project's MediaPipe runs (``blazepose.detect_video``, video mode, smooth_landmarks=False),
  single-person videos, 400 frames: detecting on every frame gives median 0.84 %, p90 2.2 % of the height
  (per camera median 0.73-1.0 %); the first frame, where MediaPipe detects too, matches to 0.001 %. Later
  frames differ because MediaPipe crops around the previous frame's smoothed landmarks; tracking with the
  unsmoothed ``next_roi`` instead gives median 0.65 %, p90 1.8 %.
- Multi-person videos (two people, 400 frames): with the default score threshold 0.5, ``detect_people``
  finds both in 142 frames (cam01 32, cam02 41, cam03 0, cam04 69), one in 248, none in 10; never more
  than two, and a visual check of every 5th frame found no result on anything but the two people. The
  detector keys on faces; here the man's face is blurred and the woman is smaller, turned away or partly
  hidden in many frames, so the second person is often missed (MediaPipe's own detector returns the same
  detections, compared on 21 of these frames). Where two people overlap, a second
  detection sometimes yields a pose mixing both (a visual check of every 5th frame: about 6 such frames on
  cam02, a few on cam04), and 7 times it found the first person again (removed by detect_people).
  With score_threshold=0.3 both are found in 203 frames (49/63/1/90), one in 189, none in 8, never three
  (23 repeats removed).
- Person boxes from the detection circle alone against the tight box of the 33 landmarks (940 poses):
  IoU p10/p50/p90 0.48/0.67/0.81; larger side ratio 0.88/1.00/1.21; centre offset median 7 %, p90 19 %
  of the larger side.
- Speed on this 2-core CPU (shared with other jobs, load ~1.6): detector 42 ms per frame (9 ms of it the
  letterboxed input), landmarker 52 ms per person (21 ms crop, 25 ms model); interpreters take ~0.1 s to
  create, once per process. MediaPipe's static mode took 150-200 ms per frame under similar load.
- ``PersonTracker`` on all 400 multi-person frames, against ``detect_people`` on every frame. "Both" counts
  frames with exactly two people, "extra" frames with a third; then detector and landmark model runs per
  frame, and ms per frame with all configurations run interleaved on the same frames (cam01 and cam04,
  load 2.2-3.0). The last row is ``PersonTracker``'s default:

  ============================== ===================== ===== ========== ======== ==========
  per frame                      both (cam01/02/03/04) extra detector   landmark ms
  ============================== ===================== ===== ========== ======== ==========
  PersonDetector, threshold 0.5  151 (38/44/0/69)      0     1          0        30
  detect_people, threshold 0.5   142 (32/41/0/69)      0     1          1.38     91
  detect_people, threshold 0.3   203 (49/63/1/90)      0     1          1.58
  tracker, detector every frame  288 (92/96/0/100)     1     1          2.12     126
  tracker, every 4th frame       288 (92/96/0/100)     0     0.26       1.82     93
  tracker + tiles, every frame   350 (99/99/52/100)    2     3          2.54     183
  tracker + tiles, every 4th     340 (99/100/41/100)   1     0.75       2.03     109
  ============================== ===================== ===== ========== ======== ==========

  (The tracker's detector threshold is 0.5 throughout; detector every 2nd / 8th frame: 287 / 284 both
  without tiles, 345 / 341 with.) In cam01, cam02 and cam04, once both people are found (without tiles
  from frame 8, 3-4 and 0; with tiles from frame 0) they are kept to the end of the video, one track each;
  a visual check of every 10th frame (detector every frame; every 4th with tiles) found each track on its
  own person throughout, and the bystanders in the background of cam01 and cam02 never returned. Each
  extra frame is a third track on a pose mixing the two people, which ends the next frame. The detector
  misses the woman in cam03 because she is small in the whole frame's 224-pixel input (the top tile finds
  her at 0.94-0.95, frames 0 and 30): without tiles only the man is followed, until he passes in front of
  her (frame 40), and after that one track at times mixes the two; with tiles she is followed in all 100
  frames, but the man, turned away from the camera, is lost there and not followed again for more than 4
  frames, as the detector keys on faces. On the 400 single-person frames every configuration returns
  exactly one person in every frame, one track per video (``detect_people``: 399, a second pose on the man
  in one; ms per frame there: detect_people 77, tracker 75 / 52, with tiles 129 / 67).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from assets.real.cache import mediapipe_model

DETECTOR_MODEL = "pose_detection/pose_detection.tflite"
LANDMARK_MODEL = "pose_landmark/pose_landmark_full.tflite"  # model_complexity 1, the Python solution's default

# -- pose_detection_cpu.pbtxt: ImageToTensorCalculator ----------------------------------------------------
DETECTOR_INPUT_SIZE = 224  # output_tensor_width/height; keep_aspect_ratio: true (letterbox)
DETECTOR_INPUT_RANGE = (-1.0, 1.0)  # output_tensor_float_range
# border_mode: BORDER_ZERO -> the letterbox bars are 0 before the range mapping, i.e. -1 in the tensor

# -- pose_detection_cpu.pbtxt: SsdAnchorsCalculator (ssd_anchors_calculator.proto defaults otherwise) ------
ANCHOR_NUM_LAYERS = 5
ANCHOR_MIN_SCALE = 0.1484375
ANCHOR_MAX_SCALE = 0.75
ANCHOR_OFFSET = 0.5  # anchor_offset_x, anchor_offset_y
ANCHOR_STRIDES = (8, 16, 32, 32, 32)
ANCHOR_ASPECT_RATIOS = (1.0,)
ANCHOR_INTERPOLATED_SCALE_ASPECT_RATIO = 1.0  # proto default: one more anchor per aspect ratio set
ANCHOR_FIXED_SIZE = True  # fixed_anchor_size: every anchor is 1 x 1, the scales only count anchors
NUM_ANCHORS = 2254  # num_boxes of TensorsToDetectionsCalculator: 28*28*2 + 14*14*2 + 7*7*6

# -- pose_detection_cpu.pbtxt: TensorsToDetectionsCalculator ---------------------------------------------
DETECTION_NUM_COORDS = 12
DETECTION_BOX_OFFSET = 0  # box_coord_offset
DETECTION_KEYPOINT_OFFSET = 4  # keypoint_coord_offset
DETECTION_NUM_KEYPOINTS = 4
DETECTION_VALUES_PER_KEYPOINT = 2
DETECTION_SCORE_CLIPPING = 100.0  # score_clipping_thresh, before the sigmoid (sigmoid_score: true)
DETECTION_COORD_SCALE = 224.0  # x_scale, y_scale, w_scale, h_scale
# reverse_output_order: true -> boxes are (x_centre, y_centre, w, h) and keypoints (x, y)
DETECTION_MIN_SCORE = 0.5  # min_score_thresh (and the Python solution's min_detection_confidence)

# -- pose_detection_cpu.pbtxt: NonMaxSuppressionCalculator -----------------------------------------------
NMS_IOU_THRESHOLD = 0.3  # min_suppression_threshold; overlap_type INTERSECTION_OVER_UNION, algorithm WEIGHTED

# keypoints of a detection (pose_detection_cpu.pbtxt's comment); its box is the face
KEYPOINT_HIP_CENTRE, KEYPOINT_FULL_BODY, KEYPOINT_SHOULDER_CENTRE, KEYPOINT_UPPER_BODY = range(4)

# -- pose_landmark/pose_detection_to_roi.pbtxt (and pose_landmarks_to_roi.pbtxt, the same options) ---------
# AlignmentPointsRectsCalculator: a square centred on the start keypoint, side twice its distance to the end
# keypoint, rotated so that start->end points up
ROI_START_KEYPOINT = KEYPOINT_HIP_CENTRE  # rotation_vector_start_keypoint_index: 0
ROI_END_KEYPOINT = KEYPOINT_FULL_BODY  # rotation_vector_end_keypoint_index: 1
ROI_TARGET_ANGLE = math.radians(90.0)  # rotation_vector_target_angle_degrees
ROI_SCALE = 1.25  # RectTransformationCalculator scale_x, scale_y (square_long: true)

# -- pose_landmark_by_roi_cpu.pbtxt: ImageToTensorCalculator -----------------------------------------------
LANDMARK_INPUT_SIZE = 256
LANDMARK_INPUT_RANGE = (0.0, 1.0)  # output_tensor_float_range
# border_mode unset -> BORDER_UNSPECIFIED -> replicate (image_to_tensor_utils.cc GetBorderMode)

# -- tensors_to_pose_landmarks_and_segmentation.pbtxt ------------------------------------------------------
NUM_MODEL_LANDMARKS = 39  # TensorsToLandmarksCalculator num_landmarks; 5 values each (x, y, z, visibility, presence)
NUM_LANDMARKS = 33  # SplitNormalizedLandmarkListCalculator: 0-32 are the body
AUXILIARY_LANDMARKS = (33, 35)  # ... 33-34 the auxiliary pair the next frame's ROI comes from
PRESENCE_THRESHOLD = 0.5  # ThresholdingCalculator on the pose flag (the solution's min_tracking_confidence)
# RefineLandmarksFromHeatmapCalculator: the pbtxt sets kernel_size 7, but MediaPipe's Python solution
# (mp.solutions.pose, which builds the graph through SolutionBase) runs with the proto default 9: on a
# Demo_SinglePerson frame its landmarks match ours to 0.015 px with 9 and differ by up to 3 px with 7,
# while a CalculatorGraph built straight from the same graph matches 7. The project's recorded detections
# come from the Python solution (blazepose_worker.py), so 9 is the default; 7 is the C++ graph's.
HEATMAP_KERNEL_SIZE = 9
HEATMAP_KERNEL_SIZE_CPP_GRAPH = 7
HEATMAP_MIN_CONFIDENCE = 0.5  # min_confidence_to_refine (proto default)

# The person box the detector reports from its full-body circle alone (centre = hip keypoint, radius r =
# distance to the full-body keypoint): centred on the hip keypoint, in image axes, PERSON_BOX_WIDTH x
# PERSON_BOX_HEIGHT times r. Measured on the Pose2Sim demo videos (940 detections whose landmarks are
# present, both single- and multi-person): the tight box of the 33 landmarks spans median -0.48..+0.45 r
# horizontally (width p10/p50/p90 0.66/0.88/1.34 r) and -0.79..+0.80 r vertically (height 1.31/1.58/1.79 r)
# around the hip keypoint. Image axes rather than the circle's rotation: on these upright people the
# rotation is noisy (median |rotation| 24 degrees, p90 52), and boxes turned by it fit worse (IoU median
# 0.52 against 0.67); for a lying person the larger side, which sets the downstream crop, is still right.
PERSON_BOX_WIDTH = 0.92
PERSON_BOX_HEIGHT = 1.58
# detect_people: two results whose landmarks lie within this median distance of each other (relative to
# the larger side of the better one's landmark box) are one person found twice, when a second detection
# next to a person leads the landmark model back to that person. Measured: such pairs 0.01-0.05, pairs of
# different people >= 0.35 (one pose mixing two people: 0.11).
DUPLICATE_LANDMARK_DISTANCE = 0.15
# each landmark's counterpart on the other side of the body (MediaPipe's pose landmark order: nose; eyes
# inner/centre/outer; ears; mouth; then shoulders, elbows, wrists, pinkies, index fingers, thumbs, hips, knees,
# ankles, heels, foot tips, each as left, right)
MIRRORED_LANDMARKS = np.array([0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21,
                               24, 23, 26, 25, 28, 27, 30, 29, 32, 31])

_OUTPUT_NAMES_DETECTOR = ("Identity", "Identity_1")  # raw boxes [1, 2254, 12], raw scores [1, 2254, 1]
# landmarks [1, 195], pose flag [1, 1], segmentation [1, 256, 256, 1], heatmap [1, 64, 64, 39], world [1, 117]
# (the order SplitTensorVectorCalculator splits them in)
_OUTPUT_NAMES_LANDMARKER = ("Identity", "Identity_1", "Identity_3", "Identity_4")


# -- interpreters ------------------------------------------------------------------------------------------

class _Model:
    """A LiteRT interpreter and the lock that serialises its use (an interpreter holds one set of tensors)."""

    def __init__(self, path: Path, output_names):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self.interpreter = Interpreter(model_path=str(path))
        self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        by_name = {detail["name"]: detail["index"] for detail in self.interpreter.get_output_details()}
        missing = [name for name in output_names if name not in by_name]
        if missing:
            raise ValueError(f"{path}: no output tensor {missing} (has {sorted(by_name)}); not the model "
                             f"of MediaPipe 0.10.14?")
        self.output_indices = [by_name[name] for name in output_names]
        self.lock = threading.Lock()

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            self.interpreter.set_tensor(self.input_index, tensor[None].astype(np.float32, copy=False))
            self.interpreter.invoke()
            return [self.interpreter.get_tensor(index)[0].copy() for index in self.output_indices]


_models: dict[tuple[int, str], _Model] = {}
_models_lock = threading.Lock()


def _model(path: Path, output_names) -> _Model:
    # keyed by process too: an interpreter (and its thread pool) inherited through fork is not reused
    key = (os.getpid(), str(Path(path).resolve()))
    with _models_lock:
        if key not in _models:
            _models[key] = _Model(Path(path), output_names)
        return _models[key]


def _model_path(model_path, relative: str) -> Path:
    if model_path is None:
        return mediapipe_model(relative)
    from assets.real.cache import AcquisitionError

    path = Path(model_path)
    if not path.is_file():
        raise AcquisitionError(f"the model {path} is missing: run `make setup` (or `python3 -m assets.real.cache`) "
                               f"to install MediaPipe, whose wheel ships it")
    return path


# -- image sampling ----------------------------------------------------------------------------------------

def _check_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8 or min(array.shape[:2]) < 1:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got a {array.dtype} array of shape {array.shape}")
    return array


def _rotation(angle: float) -> np.ndarray:
    # MediaPipe's rotations turn image x towards image y (clockwise on screen, y pointing down)
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _sample_square(image: np.ndarray, centre, side: float, rotation: float, size: int, border: str) -> np.ndarray:
    """``size`` x ``size`` bilinear samples of the rotated square (centre and side in OpenCV pixel coordinates).

    As MediaPipe's ImageToTensorOpenCvConverter: the square's corners map to the tensor's corners, so tensor
    pixel (i, j) shows the point centre + R (side * (i / size - 1/2), side * (j / size - 1/2)).
    """
    steps = (np.arange(size) / size - 0.5) * side
    local = np.stack(np.meshgrid(steps, steps), axis=-1).reshape(-1, 2)  # row-major: (x, y) of pixel (i, j)
    points = local @ _rotation(rotation).T + np.asarray(centre, dtype=np.float64)
    # the OpenCV built into MediaPipe interpolates at 1/32-pixel steps (INTER_BITS = 5): so sampled, detections
    # match MediaPipe's to 1e-3 px (OpenCV 5's exact coordinates change 2-5 % of the pixels by 1-4 levels).
    # With such weights float32 sums of uint8 values are exact, so the rounding is OpenCV's fixed-point one
    fixed = np.round(points * 32).astype(np.int64)
    x0, y0 = fixed[:, 0] >> 5, fixed[:, 1] >> 5
    fx, fy = (fixed[:, 0] & 31).astype(np.float32) / 32, (fixed[:, 1] & 31).astype(np.float32) / 32
    height, width = image.shape[:2]
    flat = image.reshape(-1, 3)
    value = np.zeros((len(points), 3), dtype=np.float32)
    for x, y, weight in ((x0, y0, (1 - fx) * (1 - fy)), (x0 + 1, y0, fx * (1 - fy)),
                         (x0, y0 + 1, (1 - fx) * fy), (x0 + 1, y0 + 1, fx * fy)):
        if border == "zero":  # outside pixels are 0: they drop out of the sum
            weight = weight * ((x >= 0) & (x < width) & (y >= 0) & (y < height))
        index = np.clip(y, 0, height - 1) * width + np.clip(x, 0, width - 1)
        value += weight[:, None] * np.take(flat, index, axis=0)  # take: several times faster than [index]
    # warpPerspective writes uint8 (the input's type), rounding half up, before the range mapping
    return np.floor(value + 0.5).reshape(size, size, 3)


def _to_range(samples: np.ndarray, value_range) -> np.ndarray:
    low, high = value_range
    return (samples * ((high - low) / 255.0) + low).astype(np.float32)


# -- the detector's letterbox ------------------------------------------------------------------------------

def letterbox_padding(width: int, height: int) -> np.ndarray:
    """(left, top, right, bottom) bars of the square detector input as fractions of its side (PadRoi)."""
    aspect = height / width
    if aspect < 1.0:
        vertical = (1.0 - aspect) / 2.0
        return np.array([0.0, vertical, 0.0, vertical])
    horizontal = (1.0 - 1.0 / aspect) / 2.0
    return np.array([horizontal, 0.0, horizontal, 0.0])


def letterbox_to_image(points, width: int, height: int) -> np.ndarray:
    """Normalised points [..., 2] of the letterboxed detector input -> image pixels (DetectionLetterboxRemoval)."""
    left, top, right, bottom = letterbox_padding(width, height)
    points = np.asarray(points, dtype=np.float64)
    normalised = (points - [left, top]) / [1.0 - left - right, 1.0 - top - bottom]
    return normalised * [width, height] - 0.5


def image_to_letterbox(points, width: int, height: int) -> np.ndarray:
    """Image pixels [..., 2] -> normalised points of the letterboxed detector input (inverse of the above)."""
    left, top, right, bottom = letterbox_padding(width, height)
    normalised = (np.asarray(points, dtype=np.float64) + 0.5) / [width, height]
    return normalised * [1.0 - left - right, 1.0 - top - bottom] + [left, top]


def detector_input(image) -> np.ndarray:
    """The detector's input tensor [224, 224, 3] float32 in [-1, 1]: the image letterboxed into a square."""
    image = _check_image(image)
    height, width = image.shape[:2]
    side = float(max(width, height))  # GetRoi (the whole image) padded to the tensor's aspect by PadRoi
    samples = _sample_square(image, (width / 2.0, height / 2.0), side, 0.0, DETECTOR_INPUT_SIZE, "zero")
    return _to_range(samples, DETECTOR_INPUT_RANGE)


# -- anchors, decoding, suppression ------------------------------------------------------------------------

def _anchor_scale(stride_index: int, num_strides: int) -> float:
    if num_strides == 1:
        return (ANCHOR_MIN_SCALE + ANCHOR_MAX_SCALE) / 2
    return ANCHOR_MIN_SCALE + (ANCHOR_MAX_SCALE - ANCHOR_MIN_SCALE) * stride_index / (num_strides - 1.0)


def ssd_anchors() -> np.ndarray:
    """MediaPipe's SSD anchors of the pose detector: [2254, 4] = (x_centre, y_centre, width, height), normalised.

    As SsdAnchorsCalculator: consecutive layers of equal stride share one grid; each of their layers adds an
    anchor per aspect ratio and one of the interpolated scale; cells in row-major order, anchors of a cell
    next to each other.
    """
    anchors = []
    layer = 0
    while layer < ANCHOR_NUM_LAYERS:
        sizes = []  # (width, height) of a cell's anchors
        last = layer
        while last < len(ANCHOR_STRIDES) and ANCHOR_STRIDES[last] == ANCHOR_STRIDES[layer]:
            scale = _anchor_scale(last, len(ANCHOR_STRIDES))
            for ratio in ANCHOR_ASPECT_RATIOS:
                sizes.append((scale * math.sqrt(ratio), scale / math.sqrt(ratio)))
            if ANCHOR_INTERPOLATED_SCALE_ASPECT_RATIO > 0:
                following = (1.0 if last == len(ANCHOR_STRIDES) - 1
                             else _anchor_scale(last + 1, len(ANCHOR_STRIDES)))
                interpolated = math.sqrt(scale * following)
                ratio = ANCHOR_INTERPOLATED_SCALE_ASPECT_RATIO
                sizes.append((interpolated * math.sqrt(ratio), interpolated / math.sqrt(ratio)))
            last += 1
        cells = math.ceil(DETECTOR_INPUT_SIZE / ANCHOR_STRIDES[layer])
        for y in range(cells):
            for x in range(cells):
                for anchor_width, anchor_height in sizes:
                    if ANCHOR_FIXED_SIZE:
                        anchor_width = anchor_height = 1.0
                    anchors.append(((x + ANCHOR_OFFSET) / cells, (y + ANCHOR_OFFSET) / cells,
                                    anchor_width, anchor_height))
        layer = last
    return np.array(anchors)


_ANCHORS = ssd_anchors()


@dataclass(frozen=True)
class RawDetections:
    """Detections in normalised coordinates: ``scores`` [N], ``boxes`` [N, 4] (xmin, ymin, xmax, ymax),
    ``keypoints`` [N, 4, 2] (x, y)."""

    scores: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, indices) -> RawDetections:
        return RawDetections(self.scores[indices], self.boxes[indices], self.keypoints[indices])


def decode_detections(raw_boxes, raw_scores, anchors=None, min_score: float = DETECTION_MIN_SCORE) -> RawDetections:
    """The model's raw tensors ([2254, 12] and [2254] or [2254, 1]) -> detections scoring at least ``min_score``
    (TensorsToDetectionsCalculator), in anchor order, coordinates normalised to the letterboxed input."""
    anchors = _ANCHORS if anchors is None else np.asarray(anchors, dtype=np.float64)
    raw_boxes = np.asarray(raw_boxes, dtype=np.float64).reshape(len(anchors), DETECTION_NUM_COORDS)
    logits = np.asarray(raw_scores, dtype=np.float64).reshape(len(anchors))
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -DETECTION_SCORE_CLIPPING, DETECTION_SCORE_CLIPPING)))
    anchor_xy, anchor_wh = anchors[:, None, :2], anchors[:, None, 2:]
    box = raw_boxes[:, DETECTION_BOX_OFFSET:DETECTION_BOX_OFFSET + 4]
    centre = box[:, :2] / DETECTION_COORD_SCALE * anchors[:, 2:] + anchors[:, :2]
    size = box[:, 2:] / DETECTION_COORD_SCALE * anchors[:, 2:]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    end = DETECTION_KEYPOINT_OFFSET + DETECTION_NUM_KEYPOINTS * DETECTION_VALUES_PER_KEYPOINT
    keypoints = raw_boxes[:, DETECTION_KEYPOINT_OFFSET:end].reshape(len(anchors), DETECTION_NUM_KEYPOINTS,
                                                                     DETECTION_VALUES_PER_KEYPOINT)
    keypoints = keypoints[..., :2] / DETECTION_COORD_SCALE * anchor_wh + anchor_xy
    # boxes of negative or NaN size are dropped as the calculator does (b/171391719)
    keep = (scores >= min_score) & (size >= 0).all(axis=1)
    return RawDetections(scores[keep], boxes[keep], keypoints[keep])


def _iou(box, boxes) -> np.ndarray:
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(high - low, 0.0, None), axis=1)
    union = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(detections: RawDetections, iou_threshold: float = NMS_IOU_THRESHOLD) -> RawDetections:
    """NonMaxSuppressionCalculator's WEIGHTED algorithm: the best remaining detection absorbs every detection
    overlapping it by more than ``iou_threshold``; its box and keypoints become their score-weighted mean,
    its score stays its own. Output sorted by score, best first."""
    order = np.argsort(-detections.scores, kind="stable")
    remaining = detections.take(order)
    scores, boxes, keypoints = [], [], []
    while len(remaining):
        overlapping = _iou(remaining.boxes[0], remaining.boxes) > iou_threshold
        overlapping[0] = True  # itself (a degenerate box has no area to overlap with)
        weights = remaining.scores[overlapping]
        scores.append(remaining.scores[0])
        boxes.append(weights @ remaining.boxes[overlapping] / weights.sum())
        keypoints.append(np.tensordot(weights, remaining.keypoints[overlapping], axes=1) / weights.sum())
        remaining = remaining.take(~overlapping)
    if not scores:
        return RawDetections(np.zeros(0), np.zeros((0, 4)), np.zeros((0, DETECTION_NUM_KEYPOINTS, 2)))
    return RawDetections(np.array(scores), np.array(boxes), np.array(keypoints))


# -- regions of interest and detections in pixels -----------------------------------------------------------

def _normalise_radians(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


@dataclass(frozen=True)
class PoseRoi:
    """The square region the landmark model sees: ``centre`` (u, v) and ``side`` in image pixels, ``rotation``
    in radians (MediaPipe's sense: positive turns the image's x axis towards its y axis; 0 = person upright)."""

    centre: tuple[float, float]
    side: float
    rotation: float

    @classmethod
    def from_alignment_points(cls, centre, scale_point) -> PoseRoi:
        """AlignmentPointsRectsCalculator + RectTransformationCalculator: a square around ``centre`` of side
        2 |scale_point - centre| * ROI_SCALE, rotated so that centre -> scale_point points up."""
        centre = np.asarray(centre, dtype=np.float64)
        delta = np.asarray(scale_point, dtype=np.float64) - centre
        rotation = _normalise_radians(ROI_TARGET_ANGLE - math.atan2(-delta[1], delta[0]))
        side = 2.0 * float(np.hypot(*delta)) * ROI_SCALE
        return cls((float(centre[0]), float(centre[1])), side, rotation)

    @property
    def radius(self) -> float:
        """The radius of the circle it was made from (|scale_point - centre|)."""
        return self.side / (2.0 * ROI_SCALE)

    def to_image(self, points) -> np.ndarray:
        """Points [..., 2] in the ROI's normalised frame ((0, 0) top-left, (1, 1) bottom-right) -> image pixels."""
        local = (np.asarray(points, dtype=np.float64) - 0.5) * self.side
        return local @ _rotation(self.rotation).T + self.centre

    def person_box(self) -> np.ndarray:
        """The box (x_left, y_top, width, height) of the person whose full-body circle this is (see
        PERSON_BOX_WIDTH): the tight box around their joints that it predicts."""
        size = np.array([PERSON_BOX_WIDTH, PERSON_BOX_HEIGHT]) * self.radius
        return np.concatenate([np.asarray(self.centre) - size / 2, size])


@dataclass(frozen=True)
class PoseDetection:
    """One person found by ``PersonDetector``, in image pixels: ``score``; ``face_box`` (x_left, y_top, width,
    height); ``keypoints`` [4, 2] (hip centre, full-body size/rotation point, shoulder centre, upper-body
    size/rotation point); ``roi`` for the landmark model; ``box`` the person box (``PoseRoi.person_box``)."""

    score: float
    face_box: np.ndarray
    keypoints: np.ndarray
    roi: PoseRoi

    @property
    def box(self) -> np.ndarray:
        return self.roi.person_box()

    def shifted(self, dx: float, dy: float) -> PoseDetection:
        """The detection moved by (dx, dy) pixels: from a tile's pixels to the image's."""
        offset = np.array([dx, dy], dtype=np.float64)
        face_box = np.concatenate([self.face_box[:2] + offset, self.face_box[2:]])
        roi = PoseRoi(tuple(np.asarray(self.roi.centre) + offset), self.roi.side, self.roi.rotation)
        return PoseDetection(self.score, face_box, self.keypoints + offset, roi)


class PersonDetector:
    """BlazePose's person detector for every person in an image.

    ``detector(image)`` -> float64 [N, 5] = (x_left, y_top, width, height, score) in pixels of ``image``
    (uint8 RGB [H, W, 3]), best score first; [0, 5] when nobody is found. ``detect(image)`` gives the full
    ``PoseDetection`` of each. ``max_people`` keeps only the best ones.

    With ``box_from_landmarks`` the boxes are the tight boxes of the landmarks instead (``detect_people``:
    the landmark model runs on each detection, which drops detections it sees no pose in and ones that
    find a person already found); it costs one landmark model run per detection.
    """

    def __init__(self, model_path=None, *, score_threshold: float = DETECTION_MIN_SCORE,
                 iou_threshold: float = NMS_IOU_THRESHOLD, max_people: int | None = None,
                 box_from_landmarks: bool = False, landmark_model_path=None):
        self.model_path = _model_path(model_path, DETECTOR_MODEL)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_people = max_people
        self._model = _model(self.model_path, _OUTPUT_NAMES_DETECTOR)
        self._landmarker = Landmarker(landmark_model_path) if box_from_landmarks else None

    def detect_normalised(self, image) -> RawDetections:
        """The detections after suppression, normalised to the letterboxed input (before letterbox removal)."""
        raw_boxes, raw_scores = self._model.run(detector_input(image))
        detections = weighted_nms(decode_detections(raw_boxes, raw_scores, min_score=self.score_threshold),
                                  self.iou_threshold)
        if self.max_people is not None:
            detections = detections.take(slice(0, self.max_people))
        return detections

    def detect(self, image) -> list[PoseDetection]:
        image = _check_image(image)
        height, width = image.shape[:2]
        found = self.detect_normalised(image)
        corners = letterbox_to_image(found.boxes.reshape(-1, 2, 2), width, height)
        keypoints = letterbox_to_image(found.keypoints, width, height)
        return [PoseDetection(score=float(score),
                              face_box=np.concatenate([low_high[0], low_high[1] - low_high[0]]),
                              keypoints=points,
                              roi=PoseRoi.from_alignment_points(points[ROI_START_KEYPOINT], points[ROI_END_KEYPOINT]))
                for score, low_high, points in zip(found.scores, corners, keypoints)]

    def __call__(self, image) -> np.ndarray:
        if self._landmarker is None:
            boxes = [(detection.box, detection.score) for detection in self.detect(image)]
        else:
            boxes = [(person.box, person.detection.score) for person in detect_people(image, self, self._landmarker)]
        if not boxes:
            return np.zeros((0, 5))
        return np.array([[*box, score] for box, score in boxes])


# -- landmarks ---------------------------------------------------------------------------------------------

def landmark_input(image, roi: PoseRoi) -> np.ndarray:
    """The landmark model's input [256, 256, 3] float32 in [0, 1]: the rotated square ``roi``, edge pixels
    replicated; crop pixel (i, j) shows image point ``roi.to_image((i / 256, j / 256)) + 0.5``."""
    image = _check_image(image)
    # MediaPipe's ROI centre is x * W in coordinates from the image's edge; OpenCV samples with pixel
    # centres at integers, so the square is sampled half a pixel right of and below roi.centre
    centre = np.asarray(roi.centre) + 0.5
    samples = _sample_square(image, centre, roi.side, roi.rotation, LANDMARK_INPUT_SIZE, "replicate")
    return _to_range(samples, LANDMARK_INPUT_RANGE)


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(values, -500.0, 500.0)))


def refine_from_heatmap(points: np.ndarray, heatmap: np.ndarray, kernel_size: int = HEATMAP_KERNEL_SIZE,
                        min_confidence: float = HEATMAP_MIN_CONFIDENCE) -> np.ndarray:
    """RefineLandmarksFromHeatmapCalculator: each landmark (normalised to the crop) moves to the
    confidence-weighted mean of the heatmap cells around it, where the heatmap is confident enough.

    Cells count from the crop's corner (cell c at c / size, as MediaPipe weights them), and the cell under a
    landmark is found by truncation towards zero, as C++'s int conversion does.
    """
    size_y, size_x = heatmap.shape[:2]
    refined = np.array(points, dtype=np.float64)
    half = (kernel_size - 1) // 2
    for index, (x, y) in enumerate(refined):
        col, row = int(x * size_x), int(y * size_y)
        if not (0 <= col < size_x and 0 <= row < size_y):
            continue
        rows = slice(max(0, row - half), min(size_y, row + half + 1))
        cols = slice(max(0, col - half), min(size_x, col + half + 1))
        confidence = _sigmoid(heatmap[rows, cols, index].astype(np.float64))
        total = confidence.sum()
        if confidence.max() >= min_confidence and total > 0:
            row_index, col_index = np.mgrid[rows, cols]
            refined[index] = ((col_index * confidence).sum() / size_x / total,
                              (row_index * confidence).sum() / size_y / total)
    return refined


@dataclass(frozen=True)
class PoseLandmarks:
    """The landmark model's answer for one region: ``landmarks`` [33, 3] = (u, v, visibility) in image
    pixels; ``world`` [33, 3] metres, hip-centred (MediaPipe's pose_world_landmarks); ``presence`` the pose
    flag (MediaPipe reports no pose below PRESENCE_THRESHOLD); ``roi`` the region it looked at;
    ``next_roi`` the region MediaPipe would look at in the next video frame (from the auxiliary landmarks);
    ``detection`` the detection it came from, if any."""

    landmarks: np.ndarray
    world: np.ndarray
    presence: float
    roi: PoseRoi
    next_roi: PoseRoi
    detection: PoseDetection | None = field(default=None, compare=False)

    @property
    def present(self) -> bool:
        return self.presence >= PRESENCE_THRESHOLD

    @property
    def box(self) -> np.ndarray:
        """The tight box (x_left, y_top, width, height) around the 33 landmarks."""
        low, high = self.landmarks[:, :2].min(axis=0), self.landmarks[:, :2].max(axis=0)
        return np.concatenate([low, high - low])


class Landmarker:
    """BlazePose's landmark model (full) on a region: ``landmarker(image, roi) -> PoseLandmarks``.

    ``heatmap_kernel_size``: HEATMAP_KERNEL_SIZE reproduces mp.solutions.pose, HEATMAP_KERNEL_SIZE_CPP_GRAPH
    the C++ graph.
    """

    def __init__(self, model_path=None, *, heatmap_kernel_size: int = HEATMAP_KERNEL_SIZE):
        self.model_path = _model_path(model_path, LANDMARK_MODEL)
        self.heatmap_kernel_size = heatmap_kernel_size
        self._model = _model(self.model_path, _OUTPUT_NAMES_LANDMARKER)

    def __call__(self, image, roi: PoseRoi, detection: PoseDetection | None = None) -> PoseLandmarks:
        raw, flag, heatmap, raw_world = self._model.run(landmark_input(image, roi))
        raw = raw.reshape(NUM_MODEL_LANDMARKS, -1).astype(np.float64)
        points = refine_from_heatmap(raw[:, :2] / LANDMARK_INPUT_SIZE, heatmap, self.heatmap_kernel_size)
        # LandmarkLetterboxRemoval is the identity here: the ROI is square like the tensor
        pixels = roi.to_image(points)
        visibility = _sigmoid(raw[:NUM_LANDMARKS, 3])
        world = raw_world.reshape(NUM_MODEL_LANDMARKS, 3)[:NUM_LANDMARKS].astype(np.float64)
        # WorldLandmarkProjectionCalculator turns x, y by the ROI's rotation, z stays
        world[:, :2] = world[:, :2] @ _rotation(roi.rotation).T
        auxiliary = pixels[AUXILIARY_LANDMARKS[0]:AUXILIARY_LANDMARKS[1]]
        return PoseLandmarks(
            landmarks=np.column_stack([pixels[:NUM_LANDMARKS], visibility]),
            world=world,
            presence=float(np.ravel(flag)[0]),
            roi=roi,
            next_roi=PoseRoi.from_alignment_points(auxiliary[0], auxiliary[1]),
            detection=detection,
        )


def _landmark_distance(result: PoseLandmarks, kept: PoseLandmarks) -> float:
    """The median distance between the two poses' landmarks, relative to the larger side of ``kept``'s box."""
    distance = np.median(np.linalg.norm(result.landmarks[:, :2] - kept.landmarks[:, :2], axis=1))
    return float(distance / max(max(kept.box[2:]), 1e-9))


def _same_person(result: PoseLandmarks, kept: PoseLandmarks) -> bool:
    return _landmark_distance(result, kept) < DUPLICATE_LANDMARK_DISTANCE


def _one_person(a: PoseLandmarks, b: PoseLandmarks) -> bool:
    """Whether two poses are one person found twice (PersonTracker): as ``_same_person``, but relative to the
    larger pose and with either pose mirrored too. A pose mixing a person with a neighbour's legs is larger than
    the person's own (Demo_MultiPerson cam04 frame 30: 0.11 of the mixed pose's side, 0.16 of hers), and the
    landmark model may see a person as facing the other way (a track born so in cam02 frame 91 was 0.21-0.40
    from the woman's pose as it stood, 0.05-0.15 mirrored, for the 7 frames it lasted)."""
    scale = max(a.box[2:].max(), b.box[2:].max(), 1e-9)
    distance = min(np.median(np.linalg.norm(a.landmarks[:, :2] - b.landmarks[order, :2], axis=1))
                   for order in (slice(None), MIRRORED_LANDMARKS))
    return distance < DUPLICATE_LANDMARK_DISTANCE * scale


def detect_people(image, detector: PersonDetector | None = None, landmarker: Landmarker | None = None, *,
                  min_presence: float = PRESENCE_THRESHOLD) -> list[PoseLandmarks]:
    """Landmarks of every person the detector finds in ``image``, best detection first.

    Regions where the landmark model sees no pose (presence below ``min_presence``) are left out, and so is
    a result that repeats a better one's person (DUPLICATE_LANDMARK_DISTANCE).
    """
    detector = detector or PersonDetector()
    landmarker = landmarker or Landmarker()
    image = _check_image(image)
    people: list[PoseLandmarks] = []
    for detection in detector.detect(image):
        result = landmarker(image, detection.roi, detection)
        if result.presence >= min_presence and not any(_same_person(result, person) for person in people):
            people.append(result)
    return people


# -- tracking people through a video -------------------------------------------------------------------------

# PersonTracker: a detection whose region's centre (the hip keypoint) lies within this fraction of a followed
# person's next region's radius from its centre is that person, and costs no landmark run; any other goes to
# the landmark model, whose landmarks decide (``_one_person``). Measured on the demo videos (every 3rd frame):
# a detection of a person found is median 0.06, p90 0.32 radii from that person's next region; the two people
# side by side in Demo_MultiPerson cam04 frame 28 are 0.38 apart. (MediaPipe's PoseLandmarkerGraph associates
# by IoU >= 0.5 instead, which takes those two for one: their regions, 2.5 radii wide, overlap by IoU 0.66.)
SAME_REGION_DISTANCE = 0.25
# square_tiles: below this zoom (the image's longer side over its shorter) tiles are not worth their detector
# runs (4:3 frames zoom 1.33x, 16:9 ones 1.78x)
TILE_MIN_ZOOM = 1.25
# PersonTracker(tiles=True): a tile cuts people off at its edges, and the detector reads a headless body as
# an upside-down or lying person: without this test tiles started 12 tracks on the single-person videos, all
# on the filmed man's legs; the 11 checked came from detections turned by 103-178 degrees (upright people:
# median 24, p90 52). In a tile only people within this angle of upright count; the whole frame's detections
# count at any angle.
TILE_MAX_ROTATION = math.radians(90.0)
# PersonTracker's defaults, measured on the Pose2Sim demo videos (module docstring): the detector every 4th
# frame, on the whole frame and its tiles, finds both people in 340 of the 400 multi-person frames at 0.75
# detector and 2.0 landmark runs per frame; on every frame, 350 at 3.0 and 2.5; on every frame without tiles,
# 288 at 1.0 and 2.1. A person who comes into view is found up to 3 frames late.
DETECT_EVERY = 4
DETECT_IN_TILES = True


def square_tiles(width: int, height: int) -> list[tuple[int, int, int]]:
    """(left, top, side) of the fewest squares of the image's shorter side that cover it, evenly overlapping;
    none for an image so nearly square that they would show people less than TILE_MIN_ZOOM times larger than
    the whole image does."""
    side, length = min(width, height), max(width, height)
    if length < TILE_MIN_ZOOM * side:
        return []
    count = math.ceil(length / side)
    starts = [round(k * (length - side) / (count - 1)) for k in range(count)]
    return [(start, 0, side) if width > height else (0, start, side) for start in starts]


def _same_region(detection: PoseDetection, region: PoseRoi) -> bool:
    return float(np.hypot(*np.subtract(detection.roi.centre, region.centre))) < SAME_REGION_DISTANCE * region.radius


@dataclass(frozen=True)
class TrackedPerson:
    """One person of a video frame: ``track_id`` (the same for as long as they are followed, never reused
    within a tracker's video) and ``pose`` (their landmarks in this frame)."""

    track_id: int
    pose: PoseLandmarks


class PersonTracker:
    """Everyone in a video, followed from frame to frame: MediaPipe's pose tracking, for several people.

    ``tracker(frame) -> [N, 5]`` = (x_left, y_top, width, height, score), the interface of ``PersonDetector``
    (so ``detect_poses(..., detector=tracker)``), called on the frames of one video in order. Each person
    found in the previous frame is looked for in their ``next_roi``, and followed while the landmark model's
    presence stays at least ``min_presence`` (MediaPipe's min_tracking_confidence). Every ``detect_every``
    frames, and on every frame where nobody is followed, the detector runs too (not while ``max_people`` are
    followed, and it adds no more, as MediaPipe's num_poses): a detection scoring at least ``score_threshold``
    that is not at a followed person's region (SAME_REGION_DISTANCE) goes to the landmark model, and starts a
    track when it finds a pose that is nobody's already found (``_one_person``). When two tracks come to
    follow one person, the track whose landmarks moved least keeps them and the other ends. With ``tiles``
    the detector also looks at the squares of the frame's shorter side that cover it (``square_tiles``): a
    person too small for the whole frame's 224-pixel input is larger there (1.76x in a 1088 x 1920 video).
    The defaults (DETECT_EVERY, DETECT_IN_TILES) are the trade-off measured in the module docstring.

    The box is the tight box of the person's 33 landmarks (the downstream crop pads it), the score their
    presence in this frame: the detector's score is from the frame where the track began, and a face seen
    then says nothing about this frame. Rows are sorted by score, best first (as detect_poses orders them),
    and ``track_ids`` / ``people`` hold the last frame's track ids / ``TrackedPerson`` in the same order.

    ``reset()`` forgets every track (a new video); a frame of another size than the last starts over too.
    """

    def __init__(self, detector: PersonDetector | None = None, landmarker: Landmarker | None = None, *,
                 score_threshold: float = DETECTION_MIN_SCORE, min_presence: float = PRESENCE_THRESHOLD,
                 detect_every: int = DETECT_EVERY, max_people: int | None = None, tiles: bool = DETECT_IN_TILES):
        if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
            raise ValueError(f"detect_every: expected a positive whole number of frames, got {detect_every!r}")
        self.detector = detector or PersonDetector(score_threshold=score_threshold)
        self.landmarker = landmarker or Landmarker()
        self.score_threshold = score_threshold
        self.min_presence = min_presence
        self.detect_every = detect_every
        self.max_people = max_people
        self.tiles = tiles
        self.reset()

    def reset(self) -> None:
        self.people: list[TrackedPerson] = []
        self._frames = 0
        self._next_id = 0
        self._frame_size: tuple[int, ...] | None = None

    @property
    def track_ids(self) -> list[int]:
        return [person.track_id for person in self.people]

    def track(self, image) -> list[TrackedPerson]:
        """The people of the next frame, best presence first."""
        image = _check_image(image)
        if image.shape[:2] != self._frame_size:
            self.reset()
            self._frame_size = image.shape[:2]
        followed = []
        for person in self.people:
            pose = self.landmarker(image, person.pose.next_roi)
            if pose.presence >= self.min_presence:
                followed.append((_landmark_distance(pose, person.pose), person.track_id, pose))
        people: list[TrackedPerson] = []
        # when two tracks find one person, the one that moved least keeps them: the other has slipped off
        # its own person (hidden, or gone) onto a neighbour
        for _, track_id, pose in sorted(followed, key=lambda entry: entry[:2]):
            if not any(_one_person(pose, p.pose) for p in people):
                people.append(TrackedPerson(track_id, pose))
        if self._detect_now(len(people)):
            for detection in self._detections(image):
                if self.max_people is not None and len(people) >= self.max_people:
                    break
                if detection.score < self.score_threshold:
                    continue
                if any(_same_region(detection, p.pose.next_roi) for p in people):
                    continue
                pose = self.landmarker(image, detection.roi, detection)
                if pose.presence >= self.min_presence and not any(_one_person(pose, p.pose) for p in people):
                    people.append(TrackedPerson(self._next_id, pose))
                    self._next_id += 1
        self._frames += 1
        self.people = sorted(people, key=lambda p: -p.pose.presence)
        return self.people

    def _detections(self, image: np.ndarray) -> list[PoseDetection]:
        found = self.detector.detect(image)
        if self.tiles:
            for left, top, side in square_tiles(image.shape[1], image.shape[0]):
                tile = image[top:top + side, left:left + side]
                found += [detection.shifted(left, top) for detection in self.detector.detect(tile)
                          if abs(detection.roi.rotation) < TILE_MAX_ROTATION]
        return sorted(found, key=lambda detection: -detection.score)

    def _detect_now(self, followed: int) -> bool:
        if self.max_people is not None and followed >= self.max_people:
            return False
        return followed == 0 or self._frames % self.detect_every == 0

    def __call__(self, image) -> np.ndarray:
        people = self.track(image)
        if not people:
            return np.zeros((0, 5))
        # a pose whose landmarks line up would give a box without width or height, which detect_poses refuses
        return np.array([[*person.pose.box[:2], *np.maximum(person.pose.box[2:], 1.0), person.pose.presence]
                         for person in people])
