"""Data-quality checks on a canonical dataset store, written as Great Expectations (GX 1.x) suites.

Pure Python, no Dagster: the orchestration layer declares one asset check per name in ``CHECK_NAMES``
and turns each ``CheckOutcome`` into a check result. Every check derives a tidy pandas frame from
the store (one row per labelled joint, bone, example or schema fact) and GX expectations decide
pass or fail; numbers GX does not report (percentiles, per-edge medians) go into the metadata too.

Huge stores are checked on a deterministic random sample of examples (at most ``max_rows`` joints'
worth), so memory stays bounded whatever the dataset size.
"""

import math
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import numpy as np
import pandas as pd
import zarr

from assets.cameras import distort_normalized
from assets.skeletons import Skeleton, UnknownSkeletonError, get_skeleton
from assets.store import ARRAY_SPECS, SCHEMA_VERSION, DatasetStore, expected_shape, open_store

CHECK_NAMES: tuple[str, ...] = ("schema", "joint_ranges_mm", "nan_rates", "bone_lengths", "reprojection",
                                "camera_rotations", "vertical_axis", "chirality")

# StoreSchemaError is a ValueError and UnknownSkeletonError a KeyError; malformed attributes raise
# TypeError/ValueError inside the schema validation, a missing or unreadable folder an OSError.
_UNREADABLE_ERRORS = (ValueError, KeyError, TypeError, OSError)
_MAX_LISTED_MISMATCHES = 20


@dataclass(frozen=True)
class QualityConfig:
    max_abs_xy_mm: float = 5000.0
    max_depth_mm: float = 20000.0
    joint_range_mostly: float = 1.0
    max_missing_2d: float = 0.5
    max_missing_3d: float = 0.5
    max_empty_example_share: float = 0.01
    min_bone_median_mm: float = 10.0
    max_bone_median_mm: float = 1000.0
    bone_ratio_factor: float = 2.5
    # a bone only counts as off when it is also this far from its median: short bones (eye to ear,
    # finger joints) are dominated by labelling noise of a few cm, as in PosePile's plausibility filter
    bone_min_deviation_mm: float = 50.0
    bone_ratio_mostly: float = 0.98
    max_reprojection_px: float = 2.0
    reprojection_mostly: float = 0.99
    # a calibration written with 6 significant digits and stored as float32 is orthonormal to ~1e-6; a
    # scaled or sheared matrix (intrinsics folded in, wrong units) is off by far more
    max_rotation_error: float = 1e-3
    # the person's up (hips -> shoulders) within 60 degrees of the world's up: standing and walking torsos
    # stay within ~30 degrees (the real Pose2Sim recording: median 26, p90 41 degrees), bending forward
    # reaches ~70 and lying down 90, hence the fraction below. A wrong vertical (world y taken for z) or
    # a swap of y with another axis puts the torso near 90 degrees for nearly everyone.
    min_up_cos: float = 0.5
    # the demo stores have 0-5% of examples past 60 degrees (bending; up to 25% of a bending sequence) and
    # real data has people lying, sitting or doing acrobatics: 80% leaves room for a dataset rich in such
    # poses while a wrong vertical fails nearly every example
    vertical_mostly: float = 0.8
    # a front cue (nose, toes) counts when its direction is at least this cosine away from the body's
    # left-right/up plane; nearer the plane (head turned far to the side, feet turned out) it decides nothing
    min_front_cue_cos: float = 0.2
    # bent knees point forward: the knees' forward offset from the hip-ankle lines, relative to the leg
    # length (tan(flexion / 2) / 2), counts when above this (knees bent by more than ~11 degrees); straight
    # legs decide nothing and hyperextended ones (5-10 degrees) stay below it
    min_knee_bend_ratio: float = 0.05
    # handedness does not change with posture (lying, handstands), only with label mistakes: pseudo-GT
    # triangulated from the real Pose2Sim recording's BlazePose detections comes out mirrored in ~5% of
    # examples (runs of frames with left and right swapped), a mirrored store in ~95%
    chirality_mostly: float = 0.8
    # fewer decided examples than this leave the verdict to one or two noisy labels
    min_chirality_examples: int = 5
    max_rows: int = 200_000  # per-joint rows read from the store; larger stores are sampled
    sample_seed: int = 0
    num_worst: int = 10  # worst examples / first unexpected rows listed in the metadata
    blocking: frozenset[str] = frozenset(CHECK_NAMES)

    def __post_init__(self):
        object.__setattr__(self, "blocking", frozenset(self.blocking))
        unknown = sorted(self.blocking - set(CHECK_NAMES))
        if unknown:
            raise ValueError(
                f"QualityConfig.blocking names unknown checks {unknown}; the checks are {list(CHECK_NAMES)}"
            )
        if self.bone_ratio_factor <= 1:
            raise ValueError(f"QualityConfig.bone_ratio_factor must be > 1, got {self.bone_ratio_factor}")
        if not 0 <= self.max_empty_example_share <= 1:
            raise ValueError(
                f"QualityConfig.max_empty_example_share must be in [0, 1], got {self.max_empty_example_share}"
            )


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    blocking: bool
    description: str  # what this run found, in one or two sentences
    metadata: dict = field(default_factory=dict)  # JSON-able: plain numbers, strings, lists, dicts


def describe_checks(config: QualityConfig | None = None) -> dict[str, str]:
    """name -> what the check asserts, with the thresholds of ``config``."""
    c = config or QualityConfig()
    return {
        "schema": "All schema arrays are present with the expected dtypes and shapes (N examples, J joints of the "
                  "skeleton, S image side), and the attributes (units, joint names, counts) agree with the arrays.",
        "joint_ranges_mm": f"Labelled 3D joints (camera frame, mm) lie within |x| < {c.max_abs_xy_mm:g}, "
                           f"|y| < {c.max_abs_xy_mm:g} and 0 < z < {c.max_depth_mm:g} "
                           f"(for at least {c.joint_range_mostly:.0%} of joints).",
        "nan_rates": f"At most {c.max_missing_2d:.0%} of 2D joints are invalid, valid 2D joints have finite pixel "
                     f"coordinates, at most {c.max_empty_example_share:.0%} of examples have no valid joint, and in "
                     f"stores with 3D labels at most {c.max_missing_3d:.0%} of 3D joints are NaN.",
        "bone_lengths": f"Each skeleton edge's median 3D length is between {c.min_bone_median_mm:g} and "
                        f"{c.max_bone_median_mm:g} mm (catches metres stored as mm), and at least "
                        f"{c.bone_ratio_mostly:.0%} of bone lengths are within a factor {c.bone_ratio_factor:g} "
                        f"of their edge's median or within {c.bone_min_deviation_mm:g} mm of it.",
        "reprojection": f"pose3d projected with the example's intrinsics and lens distortion lands within "
                        f"{c.max_reprojection_px:g} px of pose2d for at least {c.reprojection_mostly:.0%} of joints "
                        f"labelled in both.",
        "camera_rotations": f"Where a world frame exists (finite extrinsics), the rotation part of every example's "
                            f"world-to-camera extrinsics is a proper rotation: orthonormal to "
                            f"{c.max_rotation_error:g} and with determinant +1 (not a mirror).",
        "vertical_axis": f"The person's up direction (hips to shoulders) is within "
                         f"{math.degrees(math.acos(c.min_up_cos)):.0f} degrees of the world's up for at least "
                         f"{c.vertical_mostly:.0%} of examples with 3D labels; the world's up is the world axis "
                         f"the cameras' up directions (-y) point along, per sequence, or the camera's -y where "
                         f"no world frame exists.",
        "chirality": f"Poses have a person's handedness, which no posture changes but a mirror flips: the front "
                     f"cues (nose, toes, bent knees) lie on the side of the body that up x (left-to-right) points "
                     f"to, for at least {c.chirality_mostly:.0%} of the examples the cues decide (at least "
                     f"{c.min_chirality_examples} needed); skipped for skeleton formats without hips or shoulders "
                     f"and a front cue.",
    }


def run_store_checks(store_or_path, *, config: QualityConfig | None = None) -> list[CheckOutcome]:
    """Run every check on one store; one outcome per name in ``CHECK_NAMES``, in that order.

    Never raises for a broken store: a store that cannot be opened fails ``schema`` with the reason,
    and every other check fails as not run.
    """
    config = config or QualityConfig()
    store, open_error = _open(store_or_path)
    gx = _GxRunner(config.num_worst)
    verdicts = {"schema": _check_schema(gx, *_arrays_and_attrs(store_or_path, store), open_error)}
    if store is None:
        for name in CHECK_NAMES[1:]:
            verdicts[name] = _Verdict(False, f"not run: store unreadable ({open_error})",
                                      {"skipped": "store unreadable", "error": open_error})
    else:
        sample = _load_sample(store, config)
        for name, check in _DATA_CHECKS.items():
            verdicts[name] = check(gx, sample, config)
    return [
        CheckOutcome(name, bool(verdicts[name].passed), name in config.blocking, verdicts[name].description,
                     _jsonable(verdicts[name].metadata))
        for name in CHECK_NAMES
    ]


# -- plumbing ------------------------------------------------------------------------------------

class _Verdict(NamedTuple):
    passed: bool
    description: str
    metadata: dict


class _Validation(NamedTuple):
    success: bool
    expectations: dict  # label -> summary of the GX result (observed value, counts, first unexpected rows)

    def failed(self) -> list[str]:
        return [label for label, summary in self.expectations.items() if not summary["success"]]


class _GxRunner:
    """One ephemeral GX context per run of the checks; GX itself is imported only here because the
    import takes seconds and most importers of this module (e.g. Dagster definitions) never run a check."""

    def __init__(self, num_unexpected_rows: int):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.expect = gxe
        self._num_unexpected_rows = num_unexpected_rows
        self._context = gx.get_context(mode="ephemeral")
        # tqdm bars per validation would flood the Dagster run logs
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._batch = (self._context.data_sources.add_pandas("store_frames")
                       .add_dataframe_asset(name="frame")
                       .add_batch_definition_whole_dataframe("whole_frame"))

    def validate(self, suite_name: str, frame: pd.DataFrame, expectations: dict, *,
                 index_column: str = "example") -> _Validation:
        """Validate ``frame`` against ``expectations`` (label -> GX expectation).

        GX reports the first unexpected rows in frame order, identified by ``index_column``; callers
        sort frames worst-first where that makes those rows the worst ones.
        """
        for label, expectation in expectations.items():
            expectation.meta = {"label": label}
        suite = self._context.suites.add(
            self._gx.ExpectationSuite(name=suite_name, expectations=list(expectations.values()))
        )
        definition = self._context.validation_definitions.add(
            self._gx.ValidationDefinition(name=suite_name, data=self._batch, suite=suite)
        )
        result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={"result_format": "SUMMARY", "unexpected_index_column_names": [index_column],
                           "partial_unexpected_count": self._num_unexpected_rows},
        )
        summaries = {r.expectation_config.meta["label"]: _summarize(r) for r in result.results}
        return _Validation(bool(result.success), {label: summaries[label] for label in expectations})


def _summarize(result) -> dict:
    summary = {"success": bool(result.success)}
    details = result.result or {}
    for key in ("observed_value", "element_count", "unexpected_count", "unexpected_percent"):
        if key in details:
            summary[key] = details[key]
    if details.get("partial_unexpected_index_list"):
        summary["first_unexpected_rows"] = details["partial_unexpected_index_list"]
    error = _exception_message(result.exception_info)
    if error:
        summary["error"] = error
    return summary


def _exception_message(info) -> str | None:
    """GX reports an exception either at the top level or per metric that failed to compute."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    messages = [entry.get("exception_message") or "unknown error" for entry in entries
                if isinstance(entry, dict) and entry.get("raised_exception")]
    return "; ".join(dict.fromkeys(messages)) or None


def _jsonable(value):
    """Plain Python values; non-finite floats become None so the metadata is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _open(store_or_path) -> tuple[DatasetStore | None, str | None]:
    if isinstance(store_or_path, DatasetStore):
        return store_or_path, None
    try:
        return open_store(store_or_path), None
    except _UNREADABLE_ERRORS as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _arrays_and_attrs(store_or_path, store: DatasetStore | None) -> tuple[dict, dict]:
    """Arrays and attributes for the schema facts; read raw from Zarr when the store does not open,
    so a broken store still gets every mismatch listed, not only the first one that stopped opening."""
    if store is not None:
        return {name: store[name] for name in store.array_names}, store.attrs
    try:
        group = zarr.open_group(str(store_or_path), mode="r")
        return {name: group[name] for name in group.array_keys()}, dict(group.attrs)
    except _UNREADABLE_ERRORS:
        return {}, {}


@dataclass
class _Sample:
    """The arrays the data checks read, for all examples or a deterministic random sample of them."""
    examples: np.ndarray  # store index of each row of the arrays below
    num_examples_total: int
    skeleton: Skeleton
    pose3d: np.ndarray
    pose2d: np.ndarray
    joint_valid: np.ndarray
    intrinsics: np.ndarray
    distortion: np.ndarray
    extrinsics: np.ndarray
    sequence: np.ndarray
    pose3d_expected: bool
    pose3d_expected_from: str

    @cached_property
    def labelled3d(self) -> np.ndarray:
        return np.isfinite(self.pose3d).all(axis=-1)

    @property
    def metadata(self) -> dict:
        return {"examples_checked": len(self.examples), "examples_total": self.num_examples_total}


def _load_sample(store: DatasetStore, config: QualityConfig) -> _Sample:
    n = store["pose3d"].shape[0]
    limit = max(1, config.max_rows // store.skeleton.num_joints)
    names = ("pose3d", "pose2d", "joint_valid", "intrinsics", "distortion", "extrinsics", "sequence")
    if n <= limit:
        examples = np.arange(n)
        arrays = {name: store.load(name) for name in names}
    else:
        # random rather than strided: datasets interleave cameras/subjects with fixed periods
        examples = np.sort(np.random.default_rng(config.sample_seed).choice(n, size=limit, replace=False))
        arrays = {name: store[name].oindex[examples] for name in names}
    declared = store.attrs.get("has_pose3d")
    if declared is None:
        expected, source = bool(np.isfinite(arrays["pose3d"]).any()), "inferred from finite pose3d values"
    else:
        expected, source = bool(declared), "attribute has_pose3d"
    return _Sample(examples=examples, num_examples_total=n, skeleton=store.skeleton,
                   pose3d_expected=expected, pose3d_expected_from=source, **arrays)


def _skipped(reason: str, sample: _Sample) -> _Verdict:
    return _Verdict(True, f"skipped: {reason}", {"skipped": reason, **sample.metadata})


# -- schema --------------------------------------------------------------------------------------

def _schema_facts(arrays: dict, attrs: dict) -> pd.DataFrame:
    """One row per schema fact: what the store has (observed) next to what the schema wants (expected)."""
    rows = []

    def fact(item, observed, expected):
        rows.append((item, str(observed), str(expected)))

    try:
        skeleton = get_skeleton(attrs.get("skeleton"))
    except (UnknownSkeletonError, TypeError):
        fact("attribute skeleton", attrs.get("skeleton"), "a registered skeleton format")
        skeleton = None
    n = arrays["pose3d"].shape[0] if "pose3d" in arrays else None
    image_size = attrs.get("image_size")
    can_size = skeleton is not None and n is not None and isinstance(image_size, int)
    for name, spec in ARRAY_SPECS.items():
        if name not in arrays:
            if spec.required:
                fact(f"array {name}", "missing", "present")
            continue
        fact(f"array {name} dtype", arrays[name].dtype, spec.dtype)
        if can_size:
            fact(f"array {name} shape", tuple(arrays[name].shape),
                 expected_shape(name, n, skeleton.num_joints, image_size))
    for name in sorted(set(arrays) - set(ARRAY_SPECS)):
        fact(f"array {name}", "present", "absent (not in the schema)")

    fact("attribute units", attrs.get("units"), "mm")
    fact("attribute schema_version", attrs.get("schema_version"), SCHEMA_VERSION)
    if skeleton is not None:
        fact("attribute joint_names", list(attrs.get("joint_names", [])), list(skeleton.joint_names))
    if n is not None:
        fact("attribute num_examples", attrs.get("num_examples"), n)
        counts = attrs.get("counts")
        fact("attribute counts (total)", sum(counts.values()) if isinstance(counts, dict) else counts, n)
    if "has_pose3d" in attrs:
        fact("attribute has_pose3d type", type(attrs["has_pose3d"]).__name__, "bool")
    return pd.DataFrame(rows, columns=["item", "observed", "expected"])


def _check_schema(gx: _GxRunner, arrays: dict, attrs: dict, open_error: str | None) -> _Verdict:
    facts = _schema_facts(arrays, attrs)
    mismatches = facts[facts.observed != facts.expected]
    metadata = {
        "error": open_error,
        "facts_checked": len(facts),
        "mismatches": mismatches.head(_MAX_LISTED_MISMATCHES).to_dict("records"),
    }
    passed = open_error is None
    if len(facts):
        validation = gx.validate("schema", facts, {
            "observed_equals_expected": gx.expect.ExpectColumnPairValuesToBeEqual(
                column_A="observed", column_B="expected"),
        }, index_column="item")
        metadata["expectations"] = validation.expectations
        passed = passed and validation.success
    listed = "; ".join(f"{r.item} is {r.observed}, expected {r.expected}" for r in mismatches.head(3).itertuples())
    if open_error is not None:
        description = f"store unreadable: {open_error}"
    elif not passed:
        description = f"{len(mismatches)} of {len(facts)} schema facts do not match: {listed}"
    else:
        description = f"all {len(facts)} schema facts match (arrays, dtypes, shapes, attributes)"
    return _Verdict(passed, description, metadata)


# -- joint ranges --------------------------------------------------------------------------------

def _check_joint_ranges(gx: _GxRunner, sample: _Sample, config: QualityConfig) -> _Verdict:
    labelled = sample.labelled3d
    if not labelled.any():
        return _skipped("no labelled 3D joints (pose3d is all NaN)", sample)
    rows, joints = np.nonzero(labelled)
    xyz = sample.pose3d[labelled].astype(np.float64)
    frame = pd.DataFrame({"example": sample.examples[rows], "joint": joints,
                          "x_mm": xyz[:, 0], "y_mm": xyz[:, 1], "z_mm": xyz[:, 2]})
    between = gx.expect.ExpectColumnValuesToBeBetween
    xy, depth, mostly = config.max_abs_xy_mm, config.max_depth_mm, config.joint_range_mostly
    validation = gx.validate("joint_ranges_mm", frame, {
        axis: between(column=axis, min_value=low, max_value=high, strict_min=True, strict_max=True, mostly=mostly)
        for axis, low, high in (("x_mm", -xy, xy), ("y_mm", -xy, xy), ("z_mm", 0.0, depth))
    })
    observed = {axis: [float(frame[axis].min()), float(frame[axis].max())] for axis in ("x_mm", "y_mm", "z_mm")}
    metadata = {**sample.metadata, "labelled_joints": len(frame), "observed_range_mm": observed,
                "expectations": validation.expectations}
    summary = ", ".join(f"{axis[0]} in [{low:.0f}, {high:.0f}]" for axis, (low, high) in observed.items())
    if validation.success:
        return _Verdict(True, f"all {len(frame)} labelled joints in range ({summary} mm)", metadata)
    counts = ", ".join(f"{validation.expectations[axis].get('unexpected_count', '?')} joints out of range in {axis[0]}"
                       for axis in validation.failed())
    return _Verdict(False, f"{counts} (observed {summary} mm); wrong units or swapped axes?", metadata)


# -- NaN rates -----------------------------------------------------------------------------------

def _check_nan_rates(gx: _GxRunner, sample: _Sample, config: QualityConfig) -> _Verdict:
    if len(sample.examples) == 0:
        return _Verdict(False, "store has no examples", sample.metadata)
    valid = sample.joint_valid
    frame = pd.DataFrame({
        "example": sample.examples,
        "valid_joints_2d": valid.sum(axis=1),
        # every example has J joints, so the mean of per-example shares is the share over all joints
        "missing_2d_share": 1.0 - valid.mean(axis=1),
        "valid_but_nonfinite_2d": (valid & ~np.isfinite(sample.pose2d).all(axis=-1)).sum(axis=1),
        "missing_3d_share": 1.0 - sample.labelled3d.mean(axis=1),
    })
    expect = gx.expect
    expectations = {
        "missing_2d_share": expect.ExpectColumnMeanToBeBetween(
            column="missing_2d_share", min_value=0.0, max_value=config.max_missing_2d),
        "examples_with_a_valid_joint": expect.ExpectColumnValuesToBeBetween(
            column="valid_joints_2d", min_value=1, mostly=1.0 - config.max_empty_example_share),
        "valid_2d_joints_finite": expect.ExpectColumnValuesToBeBetween(column="valid_but_nonfinite_2d", max_value=0),
    }
    if sample.pose3d_expected:
        expectations["missing_3d_share"] = expect.ExpectColumnMeanToBeBetween(
            column="missing_3d_share", min_value=0.0, max_value=config.max_missing_3d)
    validation = gx.validate("nan_rates", frame, expectations)

    missing_2d, missing_3d = float(frame.missing_2d_share.mean()), float(frame.missing_3d_share.mean())
    empty = int((frame.valid_joints_2d == 0).sum())
    nonfinite = int(frame.valid_but_nonfinite_2d.sum())
    metadata = {**sample.metadata, "missing_2d_share": missing_2d, "missing_3d_share": missing_3d,
                "examples_without_valid_joint": empty, "valid_joints_with_nonfinite_2d": nonfinite,
                "pose3d_expected": sample.pose3d_expected, "pose3d_expected_from": sample.pose3d_expected_from,
                "expectations": validation.expectations}
    findings = {
        "missing_2d_share": f"{missing_2d:.1%} of 2D joints invalid (max {config.max_missing_2d:.0%})",
        "missing_3d_share": f"{missing_3d:.1%} of 3D joints NaN (max {config.max_missing_3d:.0%})",
        "examples_with_a_valid_joint": f"{empty} examples without a valid joint "
                                       f"(max {config.max_empty_example_share:.0%} of examples)",
        "valid_2d_joints_finite": f"{nonfinite} valid 2D joints with non-finite pixel coordinates",
    }
    if validation.success:
        return _Verdict(True, "; ".join(findings[label] for label in expectations), metadata)
    return _Verdict(False, "; ".join(findings[label] for label in validation.failed()), metadata)


# -- bone lengths --------------------------------------------------------------------------------

def _check_bone_lengths(gx: _GxRunner, sample: _Sample, config: QualityConfig) -> _Verdict:
    edges = np.array(sample.skeleton.edges, dtype=np.int64).reshape(-1, 2)
    if len(edges) == 0:
        return _skipped(f"skeleton {sample.skeleton.name} has no edges", sample)
    if not sample.labelled3d.any():
        return _skipped("no labelled 3D joints (pose3d is all NaN)", sample)
    pose = sample.pose3d.astype(np.float64)
    lengths = np.linalg.norm(pose[:, edges[:, 0]] - pose[:, edges[:, 1]], axis=-1)  # NaN unless both ends labelled
    names = np.array([f"{sample.skeleton.joint_names[a]}-{sample.skeleton.joint_names[b]}" for a, b in edges])
    rows, edge_ids = np.nonzero(np.isfinite(lengths))
    if len(rows) == 0:
        return _skipped("no edge has both joints labelled in 3D", sample)
    bones = pd.DataFrame({"example": sample.examples[rows], "edge": names[edge_ids],
                          "length_mm": lengths[rows, edge_ids]})
    per_edge = bones.groupby("edge", sort=False).length_mm.agg(["median", "size"])
    medians = pd.DataFrame({"edge": per_edge.index, "median_mm": per_edge["median"].to_numpy(),
                            "bones": per_edge["size"].to_numpy()})
    with np.errstate(divide="ignore", invalid="ignore"):  # zero-length medians fail the median expectation
        edge_median = bones.edge.map(per_edge["median"])
        raw_ratio = bones.length_mm / edge_median
        within_noise = (bones.length_mm - edge_median).abs() <= config.bone_min_deviation_mm
        bones["ratio"] = np.where(within_noise, 1.0, raw_ratio)
        severity = np.abs(np.log(bones.ratio.to_numpy()))
    bones = bones.iloc[np.argsort(-np.nan_to_num(severity, nan=np.inf), kind="stable")]

    expect = gx.expect
    median_check = gx.validate("bone_lengths.edge_medians", medians, {
        "edge_median_mm": expect.ExpectColumnValuesToBeBetween(
            column="median_mm", min_value=config.min_bone_median_mm, max_value=config.max_bone_median_mm),
    }, index_column="edge")
    ratio_check = gx.validate("bone_lengths.ratios", bones, {
        "length_to_edge_median": expect.ExpectColumnValuesToBeBetween(
            column="ratio", min_value=1.0 / config.bone_ratio_factor, max_value=config.bone_ratio_factor,
            mostly=config.bone_ratio_mostly),
    })
    implausible = medians[(medians.median_mm < config.min_bone_median_mm)
                          | (medians.median_mm > config.max_bone_median_mm)]
    factor = config.bone_ratio_factor
    off_ratio = int(((bones.ratio > factor) | (bones.ratio < 1 / factor)).sum())
    metadata = {**sample.metadata, "bones_measured": len(bones),
                "edge_median_mm": dict(zip(medians.edge, medians.median_mm)),
                "edges_with_implausible_median": implausible.edge.tolist(),
                "bones_beyond_ratio": off_ratio,
                "expectations": {**median_check.expectations, **ratio_check.expectations}}
    low, high = float(medians.median_mm.min()), float(medians.median_mm.max())
    findings = []
    if not median_check.success:
        findings.append(f"{len(implausible)} of {len(medians)} edges have a median length outside "
                        f"[{config.min_bone_median_mm:g}, {config.max_bone_median_mm:g}] mm "
                        f"(medians {low:.3g}-{high:.3g} mm; metres instead of mm?)")
    if not ratio_check.success:
        findings.append(f"{off_ratio} of {len(bones)} bones ({off_ratio / len(bones):.1%}) deviate more than "
                        f"x{factor:g} (and {config.bone_min_deviation_mm:g} mm) from their edge's median "
                        f"(allowed {1 - config.bone_ratio_mostly:.0%})")
    if findings:
        return _Verdict(False, "; ".join(findings), metadata)
    return _Verdict(True, f"{len(medians)} edges with median lengths {low:.0f}-{high:.0f} mm; "
                          f"{off_ratio} of {len(bones)} bones beyond x{factor:g} of their median", metadata)


# -- reprojection --------------------------------------------------------------------------------

def _project(points: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """Pixel positions [M,J,2] of camera-frame points [M,J,3], each example with its own camera.

    Same model as ``Camera.camera_to_image``, vectorised over examples.
    """
    xy = points[..., :2] / points[..., 2:3]
    # distort_normalized unpacks the five coefficients along the first axis; shaped [5, M, 1] they
    # broadcast per example over the joints
    xd, yd = np.moveaxis(distort_normalized(xy, distortion.T[:, :, None]), -1, 0)
    K = intrinsics[:, :, :, None]
    u = K[:, 0, 0] * xd + K[:, 0, 1] * yd + K[:, 0, 2]
    v = K[:, 1, 1] * yd + K[:, 1, 2]
    return np.stack([u, v], axis=-1)


def _check_reprojection(gx: _GxRunner, sample: _Sample, config: QualityConfig) -> _Verdict:
    if not sample.labelled3d.any():
        return _skipped("no labelled 3D joints (pose3d is all NaN)", sample)
    usable = sample.labelled3d & sample.joint_valid & np.isfinite(sample.pose2d).all(axis=-1)
    if not usable.any():
        return _skipped("no joint is labelled in 3D and valid in 2D", sample)
    pose3d = sample.pose3d.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        projected = _project(pose3d, sample.intrinsics.astype(np.float64), sample.distortion.astype(np.float64))
        error = np.linalg.norm(projected - sample.pose2d, axis=-1)
    # GX skips nulls, so joints that cannot be projected (behind the camera, non-finite camera) must
    # count as infinitely wrong rather than as NaN
    unprojectable = usable & ((pose3d[..., 2] <= 0) | ~np.isfinite(error))
    error[unprojectable] = np.inf
    rows, joints = np.nonzero(usable)
    frame = pd.DataFrame({"example": sample.examples[rows], "joint": joints, "error_px": error[rows, joints]})
    frame = frame.sort_values("error_px", ascending=False, kind="stable")
    validation = gx.validate("reprojection", frame, {
        "error_px": gx.expect.ExpectColumnValuesToBeBetween(
            column="error_px", max_value=config.max_reprojection_px, strict_max=True,
            mostly=config.reprojection_mostly),
    })
    errors = frame.error_px.to_numpy()
    median, p99, worst = (float(v) for v in np.percentile(errors, [50, 99, 100], method="higher"))
    worst_examples = frame.drop_duplicates("example").head(config.num_worst)
    beyond = int((errors >= config.max_reprojection_px).sum())
    metadata = {**sample.metadata, "joints_compared": len(frame), "median_error_px": median, "p99_error_px": p99,
                "max_error_px": worst, "joints_beyond_threshold": beyond,
                "unprojectable_joints": int(unprojectable.sum()),
                "worst_examples": worst_examples.example.tolist(),
                "worst_example_errors_px": worst_examples.error_px.tolist(),
                "expectations": validation.expectations}
    stats = f"median {median:.3g} px, p99 {p99:.3g} px, max {worst:.3g} px over {len(frame)} joints"
    if validation.success:
        return _Verdict(True, f"reprojection error {stats}", metadata)
    return _Verdict(False, f"{beyond} of {len(frame)} joints ({beyond / len(frame):.1%}) reproject "
                           f">= {config.max_reprojection_px:g} px from pose2d (allowed "
                           f"{1 - config.reprojection_mostly:.0%}); {stats}; worst examples "
                           f"{worst_examples.example.tolist()[:5]}", metadata)


# -- geometry: camera rotations, the vertical, handedness -----------------------------------------

def _world_rows(sample: _Sample) -> np.ndarray:
    """Examples with a world frame: extrinsics are NaN where the world is unknown (e.g. 2D-only sets)."""
    return np.isfinite(sample.extrinsics).all(axis=(1, 2))


def _check_camera_rotations(gx: _GxRunner, sample: _Sample, config: QualityConfig) -> _Verdict:
    known = _world_rows(sample)
    if not known.any():
        return _skipped("no world frame (extrinsics are NaN in every example)", sample)
    rotations = sample.extrinsics[known, :3, :3].astype(np.float64)
    error = np.abs(rotations @ np.swapaxes(rotations, 1, 2) - np.eye(3)).max(axis=(1, 2))
    determinant = np.linalg.det(rotations)
    frame = pd.DataFrame({"example": sample.examples[known], "orthonormality_error": error,
                          "determinant": determinant})
    frame = frame.iloc[np.argsort(-np.maximum(error, np.abs(determinant - 1.0)), kind="stable")]
    tolerance = config.max_rotation_error
    between = gx.expect.ExpectColumnValuesToBeBetween
    validation = gx.validate("camera_rotations", frame, {
        "orthonormality_error": between(column="orthonormality_error", max_value=tolerance),
        "determinant": between(column="determinant", min_value=1.0 - tolerance, max_value=1.0 + tolerance),
    })
    mirrored = int((determinant < 0).sum())
    # not a rotation although not a mirror either: a scaled, sheared or otherwise corrupt matrix
    improper = int(((error > tolerance) | ((np.abs(determinant - 1.0) > tolerance) & (determinant > 0))).sum())
    metadata = {**sample.metadata, "rotations_checked": len(frame),
                "examples_without_world_frame": int((~known).sum()),
                "max_orthonormality_error": float(error.max()),
                "determinant_range": [float(determinant.min()), float(determinant.max())],
                "mirrored_rotations": mirrored, "non_orthonormal_rotations": int((error > tolerance).sum()),
                "worst_examples": frame.example.head(config.num_worst).tolist(),
                "expectations": validation.expectations}
    if validation.success:
        return _Verdict(True, f"all {len(frame)} extrinsic rotations are proper rotations (orthonormal to "
                              f"{error.max():.1g}, determinants {determinant.min():.6f}-{determinant.max():.6f})",
                        metadata)
    findings = []
    if mirrored:
        findings.append(f"{mirrored} of {len(frame)} extrinsic rotations have determinant -1 (mirrored rotation "
                        f"(det -1)? e.g. a flipped axis or a left-handed world frame)")
    if improper:
        findings.append(f"{improper} of {len(frame)} extrinsic rotations are not orthonormal (max |R R^T - I| = "
                        f"{error.max():.3g}, allowed {tolerance:g}; determinants {determinant.min():.4g}-"
                        f"{determinant.max():.4g}; scaled or sheared matrix, e.g. intrinsics folded in or a "
                        f"corrupt calibration?)")
    return _Verdict(False, "; ".join(findings), metadata)


# Landmarks as options of joint groups; per example the first option whose joints are all labelled is
# used, each group averaged. Names follow assets/skeleton_formats.json (PosePile naming).
_TOP = (("lsho", "rsho"), ("neck",), ("thor",))
_BOTTOM = (("lhip", "rhip"), ("pelv",), ("mhip",))
_LEFT_RIGHT = ((("lhip",), ("rhip",)), (("lsho",), ("rsho",)))
_NOSE = (("nose",),)
_TOES = (("ltoe", "rtoe"), ("lfoo_index", "rfoo_index"), ("lfoo", "rfoo"))
_ANKLES = (("lank", "rank"),)
_LEGS = (("lhip", "lkne", "lank"), ("rhip", "rkne", "rank"))
_AXIS_NAMES = ("+x", "+y", "+z", "-x", "-y", "-z")
_SIGNED_AXES = np.concatenate([np.eye(3), -np.eye(3)])


def _joint_index(skeleton: Skeleton, name: str) -> int | None:
    """The joint called ``name``, or one that adds a source suffix to it ('lhip_smpl', 'nose_coco')."""
    if name in skeleton.joint_names:
        return skeleton.index(name)
    return next((i for i, joint in enumerate(skeleton.joint_names) if joint.split("_")[0] == name), None)


def _resolve(skeleton: Skeleton, options) -> list[list[int]]:
    """The options whose joints all exist in ``skeleton``, as index lists."""
    resolved = []
    for option in options:
        indices = [_joint_index(skeleton, name) for name in option]
        if None not in indices:
            resolved.append(indices)
    return resolved


def _first_labelled(values: list[np.ndarray]) -> np.ndarray:
    """Per example the first of ``values`` ([M,3] each) that is finite; NaN where none is."""
    out = np.full_like(values[0], np.nan)
    for value in reversed(values):
        ok = np.isfinite(value).all(axis=-1)
        out[ok] = value[ok]
    return out


def _landmark(pose: np.ndarray, options: list[list[int]]) -> np.ndarray:
    return _first_labelled([pose[:, option].mean(axis=1) for option in options])


def _unit(vectors: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _person_up(pose: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray | None, str | None]:
    """Unit vectors [M,3] from the hips (or pelvis) to the shoulders (or neck), or why there are none."""
    top, bottom = _resolve(skeleton, _TOP), _resolve(skeleton, _BOTTOM)
    if not top or not bottom:
        missing = [label for label, found in (("shoulders/neck", top), ("hips/pelvis", bottom)) if not found]
        return None, f"skeleton {skeleton.name} has no {' or '.join(missing)} joints to define the body's up"
    return _unit(_landmark(pose, top) - _landmark(pose, bottom)), None


def _world_up_axes(sample: _Sample, known: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """The world's up per example [M,3] (NaN without a world frame), per sequence the signed world axis
    the cameras' up directions (-y) point along on average, and how well they agree with it.

    Capture rigs mount most of their cameras upright (rolled well under 45 degrees; ceiling cameras are
    the exception), while the world's vertical axis differs between datasets (z up in H36M, the demo
    world and the Pose2Sim recording's Qualisys calibration; -y up in CMU Panoptic). Taking it from the
    cameras, not from the poses, lets a mistake in the poses show instead of defining the vertical.
    """
    world_up = np.full((len(sample.examples), 3), np.nan)
    camera_up = -sample.extrinsics[:, 1, :3].astype(np.float64)  # the camera's -y in world coordinates
    axes, agreement = {}, {}
    for code in np.unique(sample.sequence[known]):
        rows = known & (sample.sequence == code)
        mean_up = camera_up[rows].mean(axis=0)
        best = int(np.argmax(_SIGNED_AXES @ mean_up))
        world_up[rows] = _SIGNED_AXES[best]
        axes[int(code)] = _AXIS_NAMES[best]
        agreement[int(code)] = float(np.median(_unit(camera_up[rows]) @ _SIGNED_AXES[best]))
    return world_up, axes, agreement


def _check_vertical_axis(gx: _GxRunner, sample: _Sample, config: QualityConfig) -> _Verdict:
    if not sample.labelled3d.any():
        return _skipped("no labelled 3D joints (pose3d is all NaN)", sample)
    up, reason = _person_up(sample.pose3d.astype(np.float64), sample.skeleton)
    if up is None:
        return _skipped(reason, sample)
    has_up = np.isfinite(up).all(axis=-1)
    if not has_up.any():
        return _skipped("no example has its hips/pelvis and shoulders/neck labelled in 3D", sample)
    known = _world_rows(sample)
    world_up, axes, agreement = _world_up_axes(sample, known)
    rotations = np.nan_to_num(sample.extrinsics[:, :3, :3].astype(np.float64))
    # poses are in each example's camera frame: bring the world's up there, and where no world frame
    # exists assume an upright camera (its -y is up)
    reference = np.where(known[:, None], np.einsum("nij,nj->ni", rotations, np.nan_to_num(world_up)),
                         np.array([0.0, -1.0, 0.0]))
    up_cos = np.einsum("ni,ni->n", up, reference)
    rows = np.flatnonzero(has_up)
    frame = pd.DataFrame({"example": sample.examples[rows], "up_cos": up_cos[rows],
                          "reference": np.where(known[rows], "world up", "camera -y")})
    frame = frame.sort_values("up_cos", kind="stable")
    validation = gx.validate("vertical_axis", frame, {
        "up_cos": gx.expect.ExpectColumnValuesToBeBetween(column="up_cos", min_value=config.min_up_cos,
                                                         mostly=config.vertical_mostly),
    })
    angles = np.degrees(np.arccos(np.clip(frame.up_cos.to_numpy(), -1.0, 1.0)))
    off = int((frame.up_cos < config.min_up_cos).sum())
    limit_deg = math.degrees(math.acos(config.min_up_cos))
    # the world axis the people themselves stand along, to tell a swapped world frame from swapped poses
    people_axis, people_share = None, None
    world_rows = np.flatnonzero(has_up & known)
    if len(world_rows):
        up_world = np.einsum("nji,nj->ni", rotations[world_rows], up[world_rows])
        shares = (up_world @ _SIGNED_AXES.T >= config.min_up_cos).mean(axis=0)
        people_axis, people_share = _AXIS_NAMES[int(np.argmax(shares))], float(shares.max())
    camera_axes = sorted(set(axes.values()))
    metadata = {**sample.metadata, "examples_compared": len(frame),
                "examples_against_world_up": int((frame.reference == "world up").sum()),
                "examples_against_camera_minus_y": int((frame.reference == "camera -y").sum()),
                "sequences_per_world_up_axis": {a: list(axes.values()).count(a) for a in camera_axes},
                "min_camera_up_agreement": min(agreement.values()) if agreement else None,
                "people_world_axis": people_axis, "people_world_axis_share": people_share,
                "median_angle_deg": float(np.median(angles)), "p90_angle_deg": float(np.percentile(angles, 90)),
                "examples_beyond_angle": off,
                "worst_examples": frame.example.head(config.num_worst).tolist(),
                "expectations": validation.expectations}
    references = [f"world up ({'/'.join(camera_axes)}, from the cameras' up)"] if camera_axes else []
    if (frame.reference == "camera -y").any():
        references.append("camera -y (no world frame)")
    reference_text = " or ".join(references)
    stats = f"median angle {np.median(angles):.0f} deg, p90 {np.percentile(angles, 90):.0f} deg"
    if validation.success:
        return _Verdict(True, f"person's up within {limit_deg:.0f} deg of {reference_text} for "
                              f"{len(frame) - off} of {len(frame)} examples ({stats})", metadata)
    hint = "axes swapped or a wrong vertical (world y taken for z)?"
    if people_axis is not None and people_share >= config.vertical_mostly and people_axis not in camera_axes:
        hint = (f"the people stand along world {people_axis} but the cameras' up is {'/'.join(camera_axes)}: "
                f"axes swapped in the poses, or cameras' rotations wrong?")
    if agreement and min(agreement.values()) < config.min_up_cos:
        hint += (" (in some sequence the cameras' up points along no world axis: cameras rolled or looking "
                 "down, or camera-to-world extrinsics stored instead of world-to-camera?)")
    return _Verdict(False, f"{off} of {len(frame)} examples ({off / len(frame):.1%}) have the person's up "
                           f"(hips to shoulders) more than {limit_deg:.0f} deg from {reference_text} (allowed "
                           f"{1 - config.vertical_mostly:.0%}; {stats}); {hint}", metadata)


def _front_votes(pose: np.ndarray, skeleton: Skeleton, config: QualityConfig) -> dict[str, np.ndarray]:
    """Per front cue of the skeleton, a vote per example: +1 where the cue lies in front of the body as a
    person's handedness puts it (forward = up x left-to-right), -1 behind (a mirror image), 0 undecided."""
    up, _ = _person_up(pose, skeleton)
    pairs = _resolve(skeleton, [(left, right) for (left,), (right,) in _LEFT_RIGHT])
    left_to_right = _first_labelled([pose[:, right] - pose[:, left] for left, right in pairs])
    forward = np.cross(up, _unit(left_to_right))
    # up and left-to-right nearly parallel (a collapsed torso label) leave the forward direction to noise
    degenerate = ~(np.linalg.norm(forward, axis=-1) >= 0.5)
    forward = _unit(forward)

    def vote(score, threshold):
        decided = np.isfinite(score) & (np.abs(score) >= threshold) & ~degenerate
        return np.where(decided, np.sign(np.nan_to_num(score)), 0.0)

    votes = {}
    top, nose = _resolve(skeleton, _TOP), _resolve(skeleton, _NOSE)
    if nose:
        cue = _unit(_landmark(pose, nose) - _landmark(pose, top))
        votes["nose"] = vote(np.einsum("ni,ni->n", forward, cue), config.min_front_cue_cos)
    toes, ankles = _resolve(skeleton, _TOES), _resolve(skeleton, _ANKLES)
    if toes and ankles:
        cue = _unit(_landmark(pose, toes) - _landmark(pose, ankles))
        votes["toes"] = vote(np.einsum("ni,ni->n", forward, cue), config.min_front_cue_cos)
    legs = _resolve(skeleton, _LEGS)
    if len(legs) == 2:
        offset = sum(pose[:, knee] - 0.5 * (pose[:, hip] + pose[:, ankle]) for hip, knee, ankle in legs)
        length = sum(np.linalg.norm(pose[:, hip] - pose[:, ankle], axis=-1) for hip, _, ankle in legs)
        with np.errstate(divide="ignore", invalid="ignore"):
            votes["knees"] = vote(np.einsum("ni,ni->n", forward, offset) / length, config.min_knee_bend_ratio)
    return votes


def _chirality_unsupported(skeleton: Skeleton) -> str | None:
    missing = []
    if not _resolve(skeleton, _TOP) or not _resolve(skeleton, _BOTTOM):
        missing.append("hips/pelvis and shoulders/neck (the body's up)")
    if not _resolve(skeleton, [(left, right) for (left,), (right,) in _LEFT_RIGHT]):
        missing.append("a left/right hip or shoulder pair")
    has_toes = _resolve(skeleton, _TOES) and _resolve(skeleton, _ANKLES)
    if not (_resolve(skeleton, _NOSE) or has_toes or len(_resolve(skeleton, _LEGS)) == 2):
        missing.append("a front cue (nose, toes with ankles, or hips-knees-ankles)")
    if missing:
        return f"skeleton {skeleton.name} has no {'; no '.join(missing)}"
    return None


def _check_chirality(gx: _GxRunner, sample: _Sample, config: QualityConfig) -> _Verdict:
    if not sample.labelled3d.any():
        return _skipped("no labelled 3D joints (pose3d is all NaN)", sample)
    unsupported = _chirality_unsupported(sample.skeleton)
    if unsupported:
        return _skipped(unsupported, sample)
    votes = _front_votes(sample.pose3d.astype(np.float64), sample.skeleton, config)
    stacked = np.stack(list(votes.values()), axis=1)
    cast = (stacked != 0).sum(axis=1)
    # cues that disagree (a mislabelled nose, feet turned far out) cancel and leave the example undecided
    with np.errstate(divide="ignore", invalid="ignore"):
        handedness = stacked.sum(axis=1) / cast
    decided = np.flatnonzero((cast > 0) & (handedness != 0))
    per_cue = {name: {"decided": int((v != 0).sum()), "proper": int((v > 0).sum())} for name, v in votes.items()}
    base = {**sample.metadata, "cues": list(votes), "votes_per_cue": per_cue, "examples_decided": len(decided)}
    if len(decided) < config.min_chirality_examples:
        reason = (f"only {len(decided)} examples decided by the front cues ({', '.join(votes)}); at least "
                  f"{config.min_chirality_examples} are needed")
        return _Verdict(True, f"skipped: {reason}", {"skipped": reason, **base})
    frame = pd.DataFrame({"example": sample.examples[decided], "handedness": handedness[decided]})
    frame = frame.sort_values("handedness", kind="stable")
    validation = gx.validate("chirality", frame, {
        "handedness": gx.expect.ExpectColumnValuesToBeBetween(column="handedness", min_value=0.0, strict_min=True,
                                                             mostly=config.chirality_mostly),
    })
    mirrored = int((frame.handedness < 0).sum())
    metadata = {**base, "mirrored_examples": mirrored, "proper_share": 1.0 - mirrored / len(frame),
                "worst_examples": frame.example.head(config.num_worst).tolist(),
                "expectations": validation.expectations}
    cues = ", ".join(f"{name} {c['proper']}/{c['decided']}" for name, c in per_cue.items())
    if validation.success:
        return _Verdict(True, f"{len(frame) - mirrored} of {len(frame)} decided examples have a person's "
                              f"handedness (proper/decided per cue: {cues})", metadata)
    return _Verdict(False, f"{mirrored} of {len(frame)} decided examples ({mirrored / len(frame):.1%}) are mirror "
                           f"images (allowed {1 - config.chirality_mostly:.0%}; proper/decided per cue: {cues}); "
                           f"mirrored poses (x negated, e.g. a flipped image without swapping left/right "
                           f"labels), swapped left/right joint labels, or two axes swapped?", metadata)


_DATA_CHECKS = {
    "joint_ranges_mm": _check_joint_ranges,
    "nan_rates": _check_nan_rates,
    "bone_lengths": _check_bone_lengths,
    "reprojection": _check_reprojection,
    "camera_rotations": _check_camera_rotations,
    "vertical_axis": _check_vertical_axis,
    "chirality": _check_chirality,
}
