"""Association across views and tracking over time, on 2D detections made from known 3D people and cameras."""

import numpy as np
import pytest

from assets.association import (associate, dense_tracks, epipolar_distances, identity_checks, _essential_matrices,
                                track)
from assets.cameras import Camera, CameraRig
from assets.triangulation import triangulate

FPS = 60.0
IMAGE_SIZE = (1088, 1920)  # portrait phone videos, as the Pose2Sim demo's
# a standing person (mm, z up, facing +y): nose, shoulders, elbows, wrists, hips, knees, ankles
BODY = np.array([
    [0, 60, 1650], [-190, 0, 1450], [190, 0, 1450], [-260, 20, 1180], [260, 20, 1180], [-280, 80, 930],
    [280, 80, 930], [-110, 0, 950], [110, 0, 950], [-120, 20, 500], [120, 20, 500], [-120, 0, 80], [120, 0, 80],
], dtype=np.float64)
NOISE_PX = 2.0


def _look_at(position, name) -> Camera:
    position = np.asarray(position, dtype=np.float64)
    forward = np.array([0.0, 0.0, 1000.0]) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    R = np.stack([right, np.cross(forward, right), forward])
    return Camera(K=[[1680, 0, 543], [0, 1675, 962], [0, 0, 1]], dist=[-0.02, 0.03, 0.0005, -0.0004, 0.0], R=R,
                  t=-R @ position, name=name)


@pytest.fixture(scope="module")
def cameras():
    angles = np.radians([25, 115, 205, 295])
    return [_look_at([3600 * np.cos(a), 3600 * np.sin(a), 1900.0], f"cam{i + 1:02d}") for i, a in enumerate(angles)]


def _people(num_people: int, num_instants: int, seed: int = 0) -> np.ndarray:
    """[P, I, J, 3] world mm: people of different sizes walking slow loops around their own spots."""
    rng = np.random.default_rng(seed)
    spots = np.array([[-800, -200], [800, 100], [0, 900], [-100, -1000]])[:num_people]
    time = np.arange(num_instants) / FPS
    people = []
    for p in range(num_people):
        scale = 0.85 + 0.1 * p  # a child-sized to a tall adult-sized body
        heading = rng.uniform(0, 2 * np.pi)
        turn = np.array([[np.cos(heading), -np.sin(heading), 0], [np.sin(heading), np.cos(heading), 0], [0, 0, 1]])
        body = BODY * scale @ turn.T
        # ~1 m/s around the spot, with the limbs swinging
        centre = np.stack([spots[p, 0] + 250 * np.sin(2.5 * time + p), spots[p, 1] + 250 * np.cos(2.5 * time + p),
                           np.zeros_like(time)], axis=-1)
        swing = 60 * np.sin(6 * time + p)[:, None, None] * np.array([1.0, 0.0, 0.0])
        people.append(body[None] + centre[:, None] + swing)
    return np.stack(people)


def _detections(cameras, people, *, missing=(), rng=None, shuffle=True):
    """Flat detection table of every (camera, person, instant) not in ``missing`` [(c, p, i)], shuffled."""
    rng = rng or np.random.default_rng(1)
    uv = CameraRig(cameras).world_to_image(people)  # [C, P, I, J, 2]
    rows = [(c, p, i) for c in range(len(cameras)) for p in range(people.shape[0]) for i in range(people.shape[1])
            if (c, p, i) not in missing]
    rows = np.array(rows)
    if shuffle:
        rows = rows[rng.permutation(len(rows))]
    view, person, instant = rows.T
    points = uv[view, person, instant] + rng.normal(0, NOISE_PX, (len(rows), people.shape[2], 2))
    confidence = rng.uniform(0.7, 1.0, points.shape[:2])
    return instant, view, person, points, confidence


def _tracks_match_people(track_of_detection, person) -> dict:
    """{track: person}, asserting each kept track is one person and each person one track."""
    mapping = {}
    for t in np.unique(track_of_detection[track_of_detection >= 0]):
        owners = np.unique(person[track_of_detection == t])
        assert len(owners) == 1, f"track {t} mixes people {owners.tolist()}"
        mapping[int(t)] = int(owners[0])
    assert len(set(mapping.values())) == len(mapping), f"a person has several tracks: {mapping}"
    return mapping


def _associate_and_track(cameras, instant, view, points, confidence, **track_options):
    association = associate(instant, view, points, confidence, cameras, image_sizes=[IMAGE_SIZE] * len(cameras))
    options = {"max_step_mm": 5000.0 / FPS, "max_gap": 4, "min_length": 3, **track_options}
    tracks = track(association.instant, association.points3d, **options)
    track_of_detection = np.where(association.group_of_detection >= 0,
                                  tracks[np.maximum(association.group_of_detection, 0)], -1)
    return association, track_of_detection


# -- geometry ------------------------------------------------------------------------------------------------

def test_epipolar_distance_is_zero_for_one_point_and_grows_off_its_line(cameras):
    rig = CameraRig(cameras)
    essential = _essential_matrices(rig)
    focal = rig.focal_lengths.mean(axis=-1)
    points = _people(1, 1)[0, 0]
    uv = rig.world_to_image(points)
    xy = rig.image_to_normalized(uv)
    same = epipolar_distances(xy[0], xy[1], essential[0, 1], essential[1, 0], focal[0], focal[1])
    assert np.abs(same).max() < 1e-6 * focal.mean()
    # another person's joints are far off the lines
    other = rig.image_to_normalized(rig.world_to_image(points + [900.0, -700.0, 0.0]))
    apart = epipolar_distances(xy[0], other[1], essential[0, 1], essential[1, 0], focal[0], focal[1])
    assert np.median(apart) > 0.02 * np.hypot(*IMAGE_SIZE)


# -- association ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_people", [2, 3])
def test_association_and_tracking_recover_the_people_from_shuffled_detections(cameras, num_people):
    people = _people(num_people, 30)
    instant, view, person, points, confidence = _detections(cameras, people)
    association, track_of_detection = _associate_and_track(cameras, instant, view, points, confidence)
    assert (association.group_of_detection >= 0).all()
    assert (association.num_views == 4).all() and len(association.instant) == num_people * 30
    mapping = _tracks_match_people(track_of_detection, person)
    assert len(mapping) == num_people and (track_of_detection >= 0).all()
    # each group's points are its person's: triangulation errors are a small share of the body's size
    for g in range(len(association.instant)):
        p = person[association.group_of_detection == g][0]
        error = np.linalg.norm(association.points3d[g] - people[p, association.instant[g]], axis=-1)
        assert np.median(error) < 0.02 * np.ptp(BODY[:, 2])


def test_a_person_missing_in_some_views_is_still_associated(cameras):
    people = _people(3, 20)
    rng = np.random.default_rng(3)
    # person 0 is never seen by cam02, person 1 by two cameras only at every third instant, and random
    # single detections are lost
    missing = {(1, 0, i) for i in range(20)} | {(c, 1, i) for c in (0, 3) for i in range(0, 20, 3)}
    missing |= {(int(c), int(p), int(i)) for c, p, i in zip(rng.integers(0, 4, 12), rng.integers(0, 3, 12),
                                                                rng.integers(0, 20, 12))}
    instant, view, person, points, confidence = _detections(cameras, people, missing=missing, rng=rng)
    association, track_of_detection = _associate_and_track(cameras, instant, view, points, confidence)
    # a person seen by one camera only cannot be triangulated: exactly those detections stay alone
    views_seen = np.zeros((3, 20), dtype=int)
    np.add.at(views_seen, (person, instant), 1)
    alone = views_seen[person, instant] < 2
    assert alone.any() and (association.group_of_detection[alone] == -1).all()
    assert (association.group_of_detection[~alone] >= 0).all()
    mapping = _tracks_match_people(track_of_detection, person)
    assert len(mapping) == 3 and (track_of_detection[~alone] >= 0).all()
    views = association.num_views
    assert views.min() == 2 and views.max() == 4


def test_a_detection_no_other_view_confirms_stays_unassociated(cameras):
    people = _people(2, 6)
    instant, view, person, points, confidence = _detections(cameras, people)
    # a ghost in cam03 at every instant: a body-shaped detection where nobody stands
    ghost = CameraRig(cameras)[2].world_to_image(BODY + [300.0, 2600.0, 0.0])
    instant = np.concatenate([instant, np.arange(6)])
    view = np.concatenate([view, np.full(6, 2)])
    person = np.concatenate([person, np.full(6, -1)])
    points = np.concatenate([points, np.repeat(ghost[None], 6, axis=0)])
    confidence = np.concatenate([confidence, np.full((6, len(BODY)), 0.9)])
    association, track_of_detection = _associate_and_track(cameras, instant, view, points, confidence)
    assert (association.group_of_detection[person < 0] == -1).all()
    assert (association.group_of_detection[person >= 0] >= 0).all()
    _tracks_match_people(track_of_detection[person >= 0], person[person >= 0])


def test_unconfident_joints_do_not_decide(cameras):
    """A detection whose low-confidence joints are wild guesses is associated by its confident ones."""
    people = _people(2, 4)
    instant, view, person, points, confidence = _detections(cameras, people)
    wild = (view == 1) & (person == 0)
    points[wild, 9:] += 400.0  # legs far off ...
    confidence[wild, 9:] = 0.1  # ... and the detector says it is guessing
    association, track_of_detection = _associate_and_track(cameras, instant, view, points, confidence, min_length=1)
    assert (association.group_of_detection >= 0).all()
    _tracks_match_people(track_of_detection, person)


# -- tracking -------------------------------------------------------------------------------------------------

def test_a_person_who_leaves_ends_their_track_and_a_newcomer_starts_one(cameras):
    people = _people(3, 60)
    # person 2 leaves after instant 19; a fourth person comes in at instant 45
    newcomer = _people(4, 60)[3]
    missing = {(c, 2, i) for c in range(4) for i in range(20, 60)}
    instant, view, person, points, confidence = _detections(cameras, people, missing=missing)
    extra = _detections(cameras, newcomer[None, 45:], rng=np.random.default_rng(5))
    instant = np.concatenate([instant, extra[0] + 45])
    view = np.concatenate([view, extra[1]])
    person = np.concatenate([person, np.full(len(extra[0]), 3)])
    points = np.concatenate([points, extra[3]])
    confidence = np.concatenate([confidence, extra[4]])
    association, track_of_detection = _associate_and_track(cameras, instant, view, points, confidence)
    mapping = _tracks_match_people(track_of_detection, person)
    assert sorted(mapping.values()) == [0, 1, 2, 3]
    # numbered by length: the two who stay, the one who left (20 instants), the newcomer (15)
    assert {mapping[0], mapping[1]} == {0, 1} and mapping[2] == 2 and mapping[3] == 3


def test_a_track_survives_a_short_gap_but_not_a_long_one():
    rng = np.random.default_rng(0)
    poses = BODY[None] + np.linspace(0, 300, 40)[:, None, None] * [1.0, 0.0, 0.0] + rng.normal(0, 5, (40, 13, 3))
    instants = np.arange(40)
    short = np.ones(40, dtype=bool)
    short[10:13] = False  # 3 instants unseen
    tracks = track(instants[short], poses[short], max_step_mm=100.0, max_gap=4)
    assert (tracks == 0).all()
    long = np.ones(40, dtype=bool)
    long[10:20] = False
    tracks = track(instants[long], poses[long], max_step_mm=100.0, max_gap=4)
    assert len(np.unique(tracks[:10])) == 1 and len(np.unique(tracks[10:])) == 1 and tracks[0] != tracks[-1]


def test_a_jump_faster_than_a_body_starts_a_new_track_and_short_tracks_are_dropped():
    poses = np.repeat(BODY[None], 30, axis=0)
    poses[20:] += [1500.0, 0.0, 0.0]  # 1.5 m in 1/60 s
    tracks = track(np.arange(30), poses, max_step_mm=5000.0 / FPS, min_length=15)
    assert (tracks[:20] == 0).all() and (tracks[20:] == -1).all()


def test_people_crossing_close_keep_their_identities(cameras):
    """Two people walk past each other, their bodies 35 cm apart at the closest."""
    time = np.arange(60) / FPS
    a = BODY[None] + np.stack([-900 + 1800 * time, np.full(60, -175.0), np.zeros(60)], axis=-1)[:, None]
    b = BODY[None] * 1.1 + np.stack([900 - 1800 * time, np.full(60, 175.0), np.zeros(60)], axis=-1)[:, None]
    people = np.stack([a, b])
    instant, view, person, points, confidence = _detections(cameras, people, rng=np.random.default_rng(7))
    association, track_of_detection = _associate_and_track(cameras, instant, view, points, confidence)
    assert (association.group_of_detection >= 0).mean() > 0.95  # a few occluded-looking instants may fail
    mapping = _tracks_match_people(track_of_detection, person)
    assert len(mapping) == 2


# -- identity checks --------------------------------------------------------------------------------------------

def _dense(cameras, people, person_of_row=None):
    instant, view, person, points, confidence = _detections(cameras, people, shuffle=False)
    tracks = person if person_of_row is None else person_of_row(instant, view, person)
    points2d, weights = dense_tracks(tracks, instant, view, points, confidence, people.shape[0], len(cameras),
                                     np.arange(people.shape[1]))
    result = triangulate(points2d, weights, cameras)
    return points2d, weights, result.points3d


def test_identity_checks_find_nothing_in_correct_tracks(cameras):
    people = _people(2, 20)
    points2d, weights, points3d = _dense(cameras, people)
    checks = identity_checks(points2d, weights, cameras, points3d, interval_s=1 / FPS)
    assert checks["switches_2d"] == 0 and checks["checked_2d"] == 2 * 4 * 20
    assert checks["jumps_3d"] == 0 and checks["checked_3d"] == 2 * 19


def test_identity_checks_count_swapped_detections_and_swapped_tracks(cameras):
    people = _people(2, 20)

    def swapped_in_one_view(instant, view, person):
        # cam02 gives each person the other's detection at instants 5..9
        swap = (view == 1) & (instant >= 5) & (instant < 10)
        return np.where(swap, 1 - person, person)

    points2d, weights, points3d = _dense(cameras, people, swapped_in_one_view)
    checks = identity_checks(points2d, weights, cameras, points3d, interval_s=1 / FPS)
    assert checks["switches_2d"] == 2 * 5 and checks["switches_2d_per_view"]["cam02"] == 10
    assert sorted({i for _, _, i in checks["switch_detections"]}) == [5, 6, 7, 8, 9]

    def swapped_tracks(instant, view, person):
        return np.where(instant >= 12, 1 - person, person)  # the tracker traded the two people at instant 12

    points2d, weights, points3d = _dense(cameras, people, swapped_tracks)
    checks = identity_checks(points2d, weights, cameras, points3d, interval_s=1 / FPS)
    assert checks["switches_2d"] == 0  # every instant is consistent in itself ...
    assert checks["jumps_3d"] == 2 and sorted(checks["jump_instants"]) == [[0, 11], [1, 11]]  # ... but not in time


def test_one_person_whose_views_disagree_is_merged_not_split(cameras):
    """Two cameras see the person 25 cm higher than the other two (as videos out of sync during a jump do):
    no set of three or four views is consistent, the two pairs are; they are one person, not two."""
    people = _people(2, 8)
    instant, view, person, points, confidence = _detections(cameras, people)
    lagging = CameraRig(cameras).world_to_image(people[0] + [0.0, 0.0, 250.0])  # [C, I, J, 2]
    late = (person == 0) & (view >= 2)
    points[late] = lagging[view[late], instant[late]]
    split = associate(instant, view, points, confidence, cameras, image_sizes=[IMAGE_SIZE] * 4, merge_distance_mm=None)
    assert len(split.instant) == 3 * 8 and sorted(split.num_views[split.instant == 0]) == [2, 2, 4]
    merged = associate(instant, view, points, confidence, cameras, image_sizes=[IMAGE_SIZE] * 4)
    assert len(merged.instant) == 2 * 8 and (merged.num_views == 4).all()
    for g in range(len(merged.instant)):
        assert len(np.unique(person[merged.group_of_detection == g])) == 1
