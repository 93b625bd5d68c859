"""Converter for the Pose2Sim multi-person recording (docs/pose2sim_multi.md): tracked BlazePose people, 4 views.

The layout is the single-person demo's (``pose2sim_demo``: calibration, global frames, held-out tail)
with several people per frame: each row of ``detections/<camera>.npz`` is one person in one video frame,
``person`` says which tracked person (-1: a detection no track took, not converted), and every person is
a subject with a sequence of their own, so that pseudo-GT triangulation sees one person per view and
frame. Frame offsets are per person: the demo's second person is rendered into the videos in sync,
while the filmed one is two frames ahead in cam03.
"""

from pathlib import Path

import numpy as np

from assets.converters.common import RawExample
from assets.converters.interface import ConverterOptions
from assets.converters.pose2sim_demo import (detected_pose, frame_offsets, manifest_cameras, read_detections,
                                             read_manifest)
from assets.converters.raw_io import RawDataError, json_field, npz_field
from assets.real.blazepose import BLAZEPOSE_33

NAME = "pose2sim_multi"
VERSION = "1"
SKELETON = BLAZEPOSE_33.name
LAYOUT_VERSION = 1


def image_name(video_frame: int, person: int) -> str:
    """The crop of tracked person ``person`` at ``video_frame`` in ``images/<camera>/``."""
    return f"{video_frame:06d}_p{person}.jpg"


def read_people(manifest: dict, manifest_path: Path, cameras) -> list[tuple[str, str, dict[str, int]]]:
    """(subject, sequence, frame offsets) of each tracked person, indexed by the detections' ``person``."""
    people = json_field(manifest, "people", manifest_path)
    if not isinstance(people, list):
        raise RawDataError(manifest_path, "people", "a list of people", type(people).__name__)
    found, sequences = [], set()
    for i, entry in enumerate(people):
        where = f"people[{i}]"
        if json_field(entry, "person", manifest_path, where) != i:
            raise RawDataError(manifest_path, f"{where}.person", str(i), repr(entry.get("person")))
        subject = json_field(entry, "subject", manifest_path, where)
        sequence = json_field(entry, "sequence", manifest_path, where)
        for field, value in (("subject", subject), ("sequence", sequence)):
            if not isinstance(value, str) or not value:
                raise RawDataError(manifest_path, f"{where}.{field}", "a non-empty name", repr(value))
        # triangulation groups a sequence's examples by frame: two people in one sequence would be one
        if sequence in sequences:
            raise RawDataError(manifest_path, f"{where}.sequence", "a sequence of this person's own", repr(sequence))
        sequences.add(sequence)
        found.append((subject, sequence, frame_offsets(entry, cameras, manifest_path, where)))
    return found


def read_examples(raw_root: Path, options: ConverterOptions | None = None) -> list[RawExample]:
    raw_root = Path(raw_root)
    manifest_path, manifest = read_manifest(raw_root, LAYOUT_VERSION)
    test_from = int(json_field(manifest, "test_from_frame", manifest_path))
    cameras = manifest_cameras(raw_root, manifest_path, manifest)
    people = read_people(manifest, manifest_path, cameras)

    examples = []
    for name, camera in cameras.items():
        path = raw_root / "detections" / f"{name}.npz"
        data, frames, landmarks, boxes, confidence = read_detections(path)
        person = npz_field(data, "person", path, (len(frames),))
        if not np.issubdtype(person.dtype, np.integer) or np.any((person < -1) | (person >= len(people))):
            raise RawDataError(path, "person", f"integers -1..{len(people) - 1} (-1 or an index into the manifest's "
                                               f"'people')", f"{person.dtype} in {person.min()}..{person.max()}")
        tracked = np.flatnonzero((person >= 0) & (confidence > 0).any(axis=-1))
        keys = np.stack([frames[tracked], person[tracked]], axis=1)
        unique, counts = np.unique(keys, axis=0, return_counts=True)
        if np.any(counts > 1):
            frame, who = unique[np.argmax(counts > 1)]
            raise RawDataError(path, "person", "one row per (frame, person)",
                               f"{counts.max()} rows of person {who} in frame {frame}")
        # frame by frame, as a video is read (the crops are files, but the order keeps conversions stable)
        for i in tracked[np.lexsort((person[tracked], frames[tracked]))]:
            uv = detected_pose(path, i, landmarks, boxes, confidence)
            video_frame, who = int(frames[i]), int(person[i])
            subject, sequence, offsets = people[who]
            frame = video_frame - offsets[name]
            examples.append(RawExample(
                image_path=raw_root / "images" / name / image_name(video_frame, who),
                frame_camera=camera, crop_box=boxes[i].astype(np.float64), pose2d=uv,
                confidence=confidence[i], split="test" if frame >= test_from else "train",
                subject=subject, sequence=sequence, frame=frame, camera=name))
    return examples


def recording_statistics(raw_root: Path) -> dict:
    """What the build measured about the people it tracked (``statistics`` in the manifest, docs/pose2sim_multi.md),
    for the pseudo-GT asset to show beside its own numbers: the tracks are its sequences."""
    manifest_path, manifest = read_manifest(Path(raw_root), LAYOUT_VERSION)
    stats = json_field(manifest, "statistics", manifest_path)
    identity = json_field(stats, "identity", manifest_path, "statistics")
    per_view = json_field(identity, "switches_2d_per_view", manifest_path, "statistics.identity")
    return {
        "people": int(json_field(stats, "people", manifest_path, "statistics")),
        "detections": int(json_field(stats, "detections", manifest_path, "statistics")),
        "associated_fraction": float(json_field(stats, "associated_fraction", manifest_path, "statistics")),
        "tracked_fraction": float(json_field(stats, "tracked_fraction", manifest_path, "statistics")),
        "identity_switches_2d": int(json_field(identity, "switches_2d", manifest_path, "statistics.identity")),
        "identity_checked_2d": int(json_field(identity, "checked_2d", manifest_path, "statistics.identity")),
        "identity_jumps_3d": int(json_field(identity, "jumps_3d", manifest_path, "statistics.identity")),
        "identity_checked_3d": int(json_field(identity, "checked_3d", manifest_path, "statistics.identity")),
        "identity_switches_2d_per_view": dict(per_view),
    }
