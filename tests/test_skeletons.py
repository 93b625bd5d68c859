import json
from pathlib import Path

import numpy as np
import pytest

from assets.skeletons import BUILTIN_FORMATS, Skeleton, UnknownSkeletonError, get_skeleton, register_skeleton

PAPER_FORMATS = {
    "smpl_24", "kinectv2_25", "h36m_17", "h36m_25", "mpi_inf_3dhp_17", "mpi_inf_3dhp_28", "coco_19", "smplx_42",
    "ghum_35", "lsp_14", "sailvos_26", "gpa_34", "aspset_17", "bml_movi_87", "mads_19", "berkeley_mhad_43",
    "total_capture_21", "jta_22", "ikea_asm_17", "human4d_32", "3dpeople_29", "umpm_15", "smpl+head_30",
}


def test_all_23_public_formats_with_matching_joint_counts():
    assert set(BUILTIN_FORMATS) == PAPER_FORMATS | {"blazepose_33", "coco_17", "mpii_16"}
    for name in BUILTIN_FORMATS:
        skeleton = get_skeleton(name)
        # the suffix of every format name is its joint count
        assert skeleton.num_joints == int(name.rsplit("_", 1)[1]), name
        assert skeleton.edges, name


def test_the_2d_formats_of_coco_and_mpii_follow_their_files_order_and_mirror():
    coco = get_skeleton("coco_17")
    assert coco.joint_names[:5] == ("nose", "leye", "reye", "lear", "rear") and coco.joint_names[-1] == "rank"
    assert {(coco.joint_names[a], coco.joint_names[b]) for a, b in coco.mirror_pairs} == {
        ("leye", "reye"), ("lear", "rear"), ("lsho", "rsho"), ("lelb", "relb"), ("lwri", "rwri"), ("lhip", "rhip"),
        ("lkne", "rkne"), ("lank", "rank")}
    mpii = get_skeleton("mpii_16")
    # MPII's point ids: 0 r ankle ... 6 pelvis, 7 thorax, 8 upper neck, 9 head top, 10 r wrist ... 15 l wrist
    assert [mpii.joint_names[i] for i in (0, 5, 6, 7, 8, 9, 10, 15)] == [
        "rank", "lank", "pelv", "thor", "neck", "htop", "rwri", "lwri"]
    assert len(mpii.mirror_pairs) == 6
    for skeleton in (coco, mpii):  # one connected body
        reached, frontier = {0}, [0]
        while frontier:
            joint = frontier.pop()
            for a, b in skeleton.edges:
                for here, there in ((a, b), (b, a)):
                    if here == joint and there not in reached:
                        reached.add(there)
                        frontier.append(there)
        assert reached == set(range(skeleton.num_joints)), skeleton.name


def test_registry_data_is_packaged_with_the_code():
    data_file = Path(__file__).parent.parent / "assets" / "skeleton_formats.json"
    assert set(json.loads(data_file.read_text())) == set(BUILTIN_FORMATS)


def test_h36m_joint_order_and_edges():
    h36m = get_skeleton("h36m_17")
    assert h36m.joint_names[:4] == ("pelv", "rhip", "rkne", "rank")
    assert h36m.root_index == 0
    edge_names = {frozenset((h36m.joint_names[a], h36m.joint_names[b])) for a, b in h36m.edges}
    assert frozenset(("lelb", "lwri")) in edge_names
    assert frozenset(("pelv", "lhip")) in edge_names


def test_mirror_pairs_follow_the_lr_prefix_convention():
    smpl = get_skeleton("smpl_24")
    perm = smpl.mirror_indices
    assert sorted(perm) == list(range(24))
    assert np.array_equal(perm[perm], np.arange(24))  # an involution
    assert smpl.joint_names[perm[smpl.index("lsho")]] == "rsho"
    assert perm[smpl.index("pelv")] == smpl.index("pelv")
    assert len(smpl.left_indices) == len(smpl.right_indices) == 9
    assert set(smpl.center_indices) == {smpl.index(n) for n in ("pelv", "spi1", "spi2", "spi3", "neck", "head")}
    for left, right in smpl.mirror_pairs:
        assert smpl.joint_names[left][1:] == smpl.joint_names[right][1:]


def test_unpartnered_l_or_r_names_are_centre_joints():
    kinect = get_skeleton("kinectv2_25")
    assert kinect.joint_names[kinect.mirror_indices[kinect.index("lhandtip")]] == "rhandtip"
    skeleton = Skeleton("odd", ("root", "lonely", "lhand", "rhand"), ((0, 1), (0, 2), (0, 3)))
    assert skeleton.mirror_indices.tolist() == [0, 1, 3, 2]


def test_unknown_format_error_lists_known_names():
    with pytest.raises(UnknownSkeletonError) as info:
        get_skeleton("h36m_71")
    message = str(info.value)
    assert "h36m_71" in message and "h36m_17" in message and "smpl_24" in message


def test_register_new_format_and_reject_conflicts():
    fmt = Skeleton("test_fmt_3", ("pelv", "lhip", "rhip"), ((0, 1), (0, 2)))
    assert register_skeleton(fmt) is fmt
    assert get_skeleton("test_fmt_3") is fmt
    assert register_skeleton(Skeleton("test_fmt_3", fmt.joint_names, fmt.edges)) is fmt
    with pytest.raises(ValueError, match="already registered"):
        register_skeleton(Skeleton("test_fmt_3", ("a", "b", "c"), ((0, 1),)))


def test_invalid_definitions_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        Skeleton("bad", ("a", "a"), ())
    with pytest.raises(ValueError, match="edge"):
        Skeleton("bad", ("a", "b"), ((0, 2),))


def test_unknown_joint_name_error_lists_joints():
    with pytest.raises(KeyError, match="lsho"):
        get_skeleton("lsp_14").index("nose")


def test_the_root_is_the_pelvis_or_else_the_hip_midpoint():
    h36m = get_skeleton("h36m_17")
    assert h36m.root_joints == (0,) and h36m.root_description == "pelv"
    from assets.real.blazepose import register
    register()  # blazepose_33 as the pipeline registers it
    for name in ("blazepose_33", "coco_17"):  # formats without a pelvis: a virtual root
        skeleton = get_skeleton(name)
        assert skeleton.root_index is None
        assert [skeleton.joint_names[i] for i in skeleton.root_joints] == ["lhip", "rhip"]
        assert skeleton.root_description == "midpoint of lhip, rhip"
    for name in BUILTIN_FORMATS:  # every shipped format has a root, hips and a torso top to orient a body
        skeleton = get_skeleton(name)
        assert skeleton.root_joints and skeleton.hip_joints and skeleton.torso_top_joints, name
        assert skeleton.root_index is None or skeleton.root_joints == (skeleton.root_index,), name


def test_a_format_without_pelvis_or_hips_has_no_root():
    skeleton = Skeleton("hands_3", ("lwri", "rwri", "neck"), ((0, 2), (1, 2)))
    assert skeleton.hip_joints is None and skeleton.root_index is None
    with pytest.raises(ValueError, match="'hands_3' has no root.*pelv.*lhip/rhip"):
        skeleton.root_joints
