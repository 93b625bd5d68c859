"""`model.bridge` and `dozens bridge`: poses of one skeleton format converted to another through a small
autoencoder fitted here on true poses of the synthetic world, checked against held-out true poses."""

import json
import re

import numpy as np
import pytest

from assets.joint_names import union_joint_names
from assets.synthetic import sample_all_formats
from benchmarks import bridge as bridge_benchmark
from model.acae import ACAE, fit_acae
from model.bridge import bridge_matrix, bridge_poses, bridgeable_formats, load_acae
from model.settings import AcaeFitSettings
from orchestration.cli import main
from pipeline_config import write_config

FORMATS = ("h36m_17", "smpl_24", "coco_19", "lsp_14")
TRAIN_SEED, TEST_SEED = 1, 2  # sample_all_formats keys subjects and motions by seed: no subject is shared


def joint_error(pred, true) -> float:
    return float(np.mean(np.linalg.norm(pred - true, axis=-1)))


@pytest.fixture(scope="module")
def acae(single_torch_thread):
    poses = sample_all_formats(1500, seed=TRAIN_SEED, formats=FORMATS)
    union = np.concatenate([poses[name] for name in FORMATS], axis=1)
    # sparse, from a random start, as the pipeline fits it; world-frame poses, hence the 3D loss
    settings = AcaeFitSettings(n_latent_sided=32, n_latent_center=8, loss="3d", steps=1500, batch_size=64,
                               lr_decay_at=(0.7, 0.9))
    return fit_acae(union, union_joint_names(FORMATS), settings, seed=0, device="cpu")


@pytest.fixture(scope="module")
def held_out():
    return sample_all_formats(200, seed=TEST_SEED, formats=FORMATS)


@pytest.fixture(scope="module")
def acae_file(acae, tmp_path_factory):
    return acae.save(tmp_path_factory.mktemp("acae") / "acae.pt")


@pytest.mark.parametrize("source, target", [("h36m_17", "smpl_24"), ("smpl_24", "h36m_17"),
                                            ("coco_19", "smpl_24"), ("lsp_14", "h36m_17")])
def test_bridged_poses_are_far_closer_than_a_perfectly_placed_mean_pose(acae, held_out, source, target):
    bridged = bridge_poses(acae, held_out[source], source, target)
    assert bridged.shape == held_out[target].shape
    reference = bridge_benchmark.mean_pose_error(held_out[target])  # the mean pose, Procrustes-placed per pose
    assert reference > 50
    assert joint_error(bridged, held_out[target]) < 0.25 * reference


def test_identity_bridge_reproduces_the_input_and_fills_in_missing_joints(acae, held_out):
    poses = held_out["h36m_17"]
    assert joint_error(bridge_poses(acae, poses, "h36m_17", "h36m_17"), poses) < 5
    damaged = poses.copy()
    # spine and head, which their neighbours place (a missing wrist could be anywhere around the elbow)
    damaged[:, [7, 9]] = np.nan
    filled = bridge_poses(acae, damaged, "h36m_17", "h36m_17")
    assert joint_error(filled[:, [7, 9]], poses[:, [7, 9]]) < 0.25 * bridge_benchmark.mean_pose_error(poses)


def test_missing_joints_still_give_finite_poses_near_the_truth(acae, held_out):
    rng = np.random.default_rng(0)
    poses = held_out["h36m_17"].copy()
    poses[rng.random(poses.shape[:2]) < 0.2] = np.nan  # a fifth of the joints, a different set in each pose
    poses[0, 1, 1] = np.nan  # a joint missing in one coordinate is missing
    bridged = bridge_poses(acae, poses, "h36m_17", "smpl_24")
    assert np.isfinite(bridged).all()
    complete = joint_error(bridge_poses(acae, held_out["h36m_17"], "h36m_17", "smpl_24"), held_out["smpl_24"])
    reference = bridge_benchmark.mean_pose_error(held_out["smpl_24"])
    assert complete <= joint_error(bridged, held_out["smpl_24"]) < 0.5 * reference


def test_any_leading_shape_and_dtype(acae, held_out):
    poses = held_out["coco_19"][:24]
    flat = bridge_poses(acae, poses, "coco_19", "lsp_14")
    batched = bridge_poses(acae, poses.reshape(2, 3, 4, 19, 3), "coco_19", "lsp_14")
    assert batched.shape == (2, 3, 4, 14, 3) and batched.dtype == np.float64
    np.testing.assert_allclose(batched.reshape(flat.shape), flat)
    single = bridge_poses(acae, poses[5].astype(np.float32), "coco_19", "lsp_14")
    assert single.shape == (14, 3) and single.dtype == np.float32
    np.testing.assert_allclose(single, flat[5], atol=0.05)
    assert bridge_poses(acae, poses[:0], "coco_19", "lsp_14").shape == (0, 14, 3)
    assert bridge_poses(acae, poses.round().astype(np.int64), "coco_19", "lsp_14").dtype == np.float64


def test_the_bridge_is_one_affine_map_so_it_moves_with_the_pose(acae, held_out):
    weights = bridge_matrix(acae, "h36m_17", "smpl_24")
    assert weights.shape == (17, 24)
    np.testing.assert_allclose(weights.sum(axis=0), 1, atol=1e-6)
    poses = held_out["h36m_17"][:10]
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    moved = 1.3 * poses @ rotation.T + [500.0, -2000.0, 300.0]
    expected = 1.3 * bridge_poses(acae, poses, "h36m_17", "smpl_24") @ rotation.T + [500.0, -2000.0, 300.0]
    np.testing.assert_allclose(bridge_poses(acae, moved, "h36m_17", "smpl_24"), expected, atol=1e-6 * 4000)
    np.testing.assert_allclose(np.einsum("nkc,kt->ntc", poses, weights),
                               bridge_poses(acae, poses, "h36m_17", "smpl_24"))
    given = np.ones(17, bool)
    given[[2, 12]] = False
    partial = poses.copy()
    partial[:, ~given] = np.nan
    partial_weights = bridge_matrix(acae, "h36m_17", "smpl_24", given)
    np.testing.assert_allclose(np.einsum("nkc,kt->ntc", poses[:, given], partial_weights),
                               bridge_poses(acae, partial, "h36m_17", "smpl_24"))
    with pytest.raises(ValueError, match="given: expected a boolean mask of h36m_17's 17 joints"):
        bridge_matrix(acae, "h36m_17", "smpl_24", given[:5])


def test_bad_requests_say_what_was_expected(acae, held_out):
    poses = held_out["h36m_17"][:3]
    with pytest.raises(ValueError, match="source format: unknown skeleton format 'h36m_71'; known formats: .*h36m_17"):
        bridge_poses(acae, poses, "h36m_71", "smpl_24")
    with pytest.raises(ValueError, match="target format 'mpii_16': the autoencoder was not fitted on it; it bridges "
                                         "between h36m_17, smpl_24, coco_19, lsp_14"):
        bridge_poses(acae, poses, "h36m_17", "mpii_16")
    with pytest.raises(ValueError, match=r"poses: expected shape \[\.\.\., 17, 3\] \(h36m_17's 17 joints.*"
                                         r"got shape \(3, 24, 3\)"):
        bridge_poses(acae, held_out["smpl_24"][:3], "h36m_17", "smpl_24")
    with pytest.raises(ValueError, match=r"expected shape \[\.\.\., 17, 3\].*got shape \(51,\)"):
        bridge_poses(acae, poses[0].ravel(), "h36m_17", "smpl_24")
    with pytest.raises(ValueError, match="expected numbers .* got dtype <U"):
        bridge_poses(acae, np.full((17, 3), "x"), "h36m_17", "smpl_24")
    with pytest.raises(ValueError, match=r"1 of 1 poses have no known joint .* index \(\)"):
        bridge_poses(acae, np.full((17, 3), np.nan), "h36m_17", "smpl_24")


def test_a_pose_without_known_joints_is_an_error_unless_allowed(acae, held_out):
    poses = held_out["h36m_17"][:4].reshape(2, 2, 17, 3).copy()
    poses[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 of 4 poses have no known joint.*index \(1, 0\).*allow_empty_poses=True"):
        bridge_poses(acae, poses, "h36m_17", "smpl_24")
    bridged = bridge_poses(acae, poses, "h36m_17", "smpl_24", allow_empty_poses=True)
    assert np.isnan(bridged[1, 0]).all() and np.isfinite(bridged[[0, 0, 1], [0, 1, 1]]).all()


def test_loading_checks_the_file_is_a_bridge(acae, acae_file, tmp_path):
    assert bridgeable_formats(load_acae(acae_file)) == FORMATS
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_acae(tmp_path / "nothing.pt")
    plain = ACAE(acae.encoder_weights, acae.decoder_weights, [f"joint{i}" for i in range(acae.num_joints)],
                 acae.joint_sides, acae.latent_sides)
    with pytest.raises(ValueError, match="not '<joint>_<format>' names"):
        load_acae(plain.save(tmp_path / "plain.pt"))


def test_cli_writes_the_bridged_poses_atomically_and_says_what_it_did(acae, acae_file, held_out, tmp_path, capsys):
    poses = held_out["h36m_17"][:6].reshape(2, 3, 17, 3).astype(np.float32)
    poses[0, 0, 4] = np.nan
    source = tmp_path / "poses.npy"
    np.save(source, poses)
    assert main(["bridge", "--from", "h36m_17", "--to", "smpl_24", str(source), "--acae", str(acae_file)]) == 0
    written = tmp_path / "poses_smpl_24.npy"
    np.testing.assert_allclose(np.load(written), bridge_poses(acae, poses, "h36m_17", "smpl_24"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poses.npy", "poses_smpl_24.npy"]  # no temporary left
    summary = capsys.readouterr().out.strip()
    assert summary.startswith("bridged 6 poses h36m_17 (17 joints, 1 of 102 missing) -> smpl_24 (24 joints)")
    assert str(written) in summary and "\n" not in summary

    listed = tmp_path / "poses.json"
    listed.write_text(json.dumps({"poses": [[[None, 0, 0]] + pose[1:].tolist() for pose in held_out["lsp_14"][:2]]}))
    out = tmp_path / "out" / "coco.npy"
    assert main(["bridge", "--from", "lsp_14", "--to", "coco_19", str(listed), "--out", str(out),
                 "--acae", str(acae_file)]) == 0
    assert np.load(out).shape == (2, 19, 3) and np.isfinite(np.load(out)).all()


@pytest.mark.parametrize("content, expected", [
    (np.zeros((4, 24, 3)), r"expected shape \[\.\.\., 17, 3\] \(h36m_17's 17 joints in its order.*"
                           r"got shape \(4, 24, 3\)"),
    (np.full((2, 17, 3), np.nan), "2 of 2 poses have no known joint"),
    ('{"poses": 3}', r'expected a JSON object with a "poses" list'),
    ("not json", r'expected a JSON object with a "poses" list'),
    ('{"poses": [[[1, 2, 3]], [[1, 2]]]}', "nested lists of numbers or null"),
    (b"not an array", "not a readable .npy array"),
])
def test_cli_refuses_bad_poses_naming_the_file_with_exit_code_2(acae_file, tmp_path, capsys, content, expected):
    if isinstance(content, np.ndarray):
        path = tmp_path / "bad.npy"
        np.save(path, content)
    elif isinstance(content, bytes):
        path = tmp_path / "bad.npy"
        path.write_bytes(content)
    else:
        path = tmp_path / "bad.json"
        path.write_text(content)
    assert main(["bridge", "--from", "h36m_17", "--to", "smpl_24", str(path), "--acae", str(acae_file)]) == 2
    message = capsys.readouterr().err
    assert str(path) in message
    assert re.search(expected, message), message
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing written


def test_cli_errors_for_missing_files_formats_and_models(acae_file, held_out, tmp_path, capsys):
    source = tmp_path / "poses.npy"
    np.save(source, held_out["h36m_17"][:2])
    assert main(["bridge", "--from", "h36m_17", "--to", "smpl_24", str(tmp_path / "none.npy"),
                 "--acae", str(acae_file)]) == 2
    assert "none.npy: no such file, expected poses as .npy or .json" in capsys.readouterr().err
    (tmp_path / "poses.csv").write_text("1,2,3")
    assert main(["bridge", "--from", "h36m_17", "--to", "smpl_24", str(tmp_path / "poses.csv"),
                 "--acae", str(acae_file)]) == 2
    assert "expected a .npy or .json file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage_error:  # argparse: usage and message, exit code 2
        main(["bridge", "--from", "h36m_71", "--to", "smpl_24", str(source), "--acae", str(acae_file)])
    assert usage_error.value.code == 2 and "unknown skeleton format 'h36m_71'" in capsys.readouterr().err
    assert main(["bridge", "--from", "h36m_17", "--to", "mpii_16", str(source), "--acae", str(acae_file)]) == 2
    assert "the autoencoder was not fitted on it" in capsys.readouterr().err
    assert main(["bridge", "--from", "h36m_17", "--to", "smpl_24", str(source),
                 "--acae", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_cli_uses_the_pipelines_autoencoder_by_default(acae, held_out, tmp_path, capsys):
    config = write_config(tmp_path, tmp_path / "raw")
    source = tmp_path / "poses.npy"
    np.save(source, held_out["h36m_17"][:2])
    command = ["--config", str(config), "bridge", "--from", "h36m_17", "--to", "smpl_24", str(source)]
    assert main(command) == 2
    message = capsys.readouterr().err
    published = tmp_path / "models" / "acae.pt"
    assert f"no fitted autoencoder at {published}" in message and "run `dozens demo`" in message and "--acae" in message
    acae.save(published)
    assert main(command) == 0
    assert str(published) in capsys.readouterr().out
    assert np.load(tmp_path / "poses_smpl_24.npy").shape == (2, 24, 3)


def test_benchmark_prints_a_table_of_the_requested_pairs(acae_file, capsys):
    assert bridge_benchmark.main(["--acae", str(acae_file), "--poses", "60", "--pairs",
                                  "h36m_17:smpl_24,lsp_14:lsp_14", "--noise-mm", "5"]) == 0
    caption, table = capsys.readouterr().out.strip().split("\n\n")
    assert "60 true poses of the synthetic world (seed 2, 5 mm noise" in caption
    table = table.splitlines()
    assert table[0].startswith("| from | to | bridge |") and len(table) == 4
    assert table[2].startswith("| h36m_17 (17) | smpl_24 (24) |")
    assert table[3].startswith("| lsp_14 (14) | lsp_14 (14) |")
    assert bridge_benchmark.default_pairs(FORMATS) == [(source, target) for source in FORMATS
                                                       for target in ("smpl_24", "h36m_17", "coco_19")]
    with pytest.raises(SystemExit):
        bridge_benchmark.main(["--acae", str(acae_file), "--pairs", "h36m_17:mpii_16"])
