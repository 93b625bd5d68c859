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

CHECK_NAMES: tuple[str, ...] = ("schema", "joint_ranges_mm", "nan_rates", "bone_lengths", "reprojection")

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
    if n <= limit:
        examples = np.arange(n)
        arrays = {name: store.load(name) for name in ("pose3d", "pose2d", "joint_valid", "intrinsics", "distortion")}
    else:
        # random rather than strided: datasets interleave cameras/subjects with fixed periods
        examples = np.sort(np.random.default_rng(config.sample_seed).choice(n, size=limit, replace=False))
        arrays = {name: store[name].oindex[examples]
                  for name in ("pose3d", "pose2d", "joint_valid", "intrinsics", "distortion")}
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


_DATA_CHECKS = {
    "joint_ranges_mm": _check_joint_ranges,
    "nan_rates": _check_nan_rates,
    "bone_lengths": _check_bone_lengths,
    "reprojection": _check_reprojection,
}
