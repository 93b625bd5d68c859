import math
import sys

import numpy as np
import pytest
import torch

from assets.joint_names import mirror_permutation, skeleton_joint_indices, split_union_joint_name, union_joint_names
from assets.skeletons import get_skeleton
from model.backbones import available_backbones, build_backbone
from model.heads import MetrabsHead, heatmap_to_image, heatmap_to_metric, soft_argmax
from model.losses import LossSettings, loss_3d_batch
from model.network import MetrabsConfig, MetrabsModel
from model.reconstruction import flip_intrinsics, mirror_pose_2d, mirror_pose_3d

S, STRIDE, DEPTH, BOX = 128, 16, 8, 2200.0
CELLS = S // STRIDE
SHARP = 1e4  # logit gap that makes float32 softmax exactly one-hot


def assert_close_at_scale(actual, expected, *, rtol: float, atol: float = 0.0):
    """``assert_close`` up to ``rtol`` of the largest magnitude compared (plus ``atol``), not of each element:
    float32 rounding in the sums and solves behind every element is relative to that scale, and it differs
    between CPUs (vector widths, summation orders), so a near-zero element is no more exact than a large one."""
    scale = float(torch.as_tensor(expected).abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol + rtol * scale)


def axis_logits(position: torch.Tensor, size: int) -> torch.Tensor:
    """Logits [..., size] whose softmax puts weight on the two cells around a fractional cell
    ``position``, so the expectation is exactly that position."""
    low = position.floor().clamp(0, size - 2)
    frac = position - low
    cells = torch.arange(size)
    weights = torch.where(cells == low[..., None], 1 - frac[..., None], torch.zeros(()))
    weights = torch.where(cells == low[..., None] + 1, frac[..., None], weights)
    return torch.where(weights > 0, weights.log(), torch.full((), -SHARP))


def head_logits(cells2d: torch.Tensor, cells3d: torch.Tensor) -> torch.Tensor:
    """Head output [B, J·(1 + D), H, W] for per-joint fractional cell positions, laid out as documented:
    2D logits of joint j at channel j, 3D logits of joint j and slice d at channel J + d·J + j.

    cells2d [B, J, 2] as (column, row); cells3d [B, J, 3] as (column, row, slice)."""
    batch, joints = cells2d.shape[:2]
    logits2d = axis_logits(cells2d[..., 1], CELLS)[..., :, None] + axis_logits(cells2d[..., 0], CELLS)[..., None, :]
    logits3d = (
        axis_logits(cells3d[..., 2], DEPTH)[..., :, None, None]
        + axis_logits(cells3d[..., 1], CELLS)[..., None, :, None]
        + axis_logits(cells3d[..., 0], CELLS)[..., None, None, :]
    )  # [B, J, D, H, W]
    channels3d = logits3d.transpose(1, 2).reshape(batch, DEPTH * joints, CELLS, CELLS)
    return torch.cat([logits2d, channels3d], dim=1)


def make_head(joints: int) -> MetrabsHead:
    return MetrabsHead(8, joints, depth=DEPTH, image_size=S, stride=STRIDE, box_size_mm=BOX)


# -- decoding --------------------------------------------------------------------------------------
def test_one_hot_heatmaps_decode_to_cell_centres_of_the_pixel_grid():
    rows, cols = torch.meshgrid(torch.arange(CELLS), torch.arange(CELLS), indexing="ij")
    cells2d = torch.stack([cols.flatten(), rows.flatten()], dim=-1).float()[None]  # every cell once
    joints = cells2d.shape[1]
    cells3d = torch.cat([cells2d, (torch.arange(joints) % DEPTH).float()[None, :, None]], dim=-1)
    coords2d, coords3d = make_head(joints).decode(head_logits(cells2d, cells3d))

    # cell i covers pixels 16 i … 16 i + 15, whose centre is 16 i + 7.5 (pixel centres at integers)
    assert_close_at_scale(coords2d[0], cells2d[0] * STRIDE + (STRIDE - 1) / 2, rtol=1e-5)
    # symmetric about the crop centre (S - 1) / 2
    torch.testing.assert_close(coords2d.aminmax(), (torch.tensor(7.5), torch.tensor(S - 1 - 7.5)))
    expected_xy = (cells2d[0] * STRIDE + (STRIDE - 1) / 2 - (S - 1) / 2) * BOX / S
    expected_z = (cells3d[0, :, 2] / (DEPTH - 1) - 0.5) * BOX
    assert_close_at_scale(coords3d[0, :, :2], expected_xy, rtol=1e-5)
    assert_close_at_scale(coords3d[0, :, 2], expected_z, rtol=1e-5)


def test_heatmaps_decode_a_known_pose_exactly():
    g = torch.Generator().manual_seed(0)
    batch, joints = 3, 17
    pixels = torch.rand(batch, joints, 2, generator=g) * (S - STRIDE) + (STRIDE - 1) / 2  # reachable range
    offsets_xy = (torch.rand(batch, joints, 2, generator=g) - 0.5) * BOX * (1 - 1 / CELLS)
    offsets_z = (torch.rand(batch, joints, 1, generator=g) - 0.5) * BOX
    pose3d = torch.cat([offsets_xy, offsets_z], dim=-1)

    # invert the documented decoding to heatmap cell positions
    cells2d = (pixels - (STRIDE - 1) / 2) / STRIDE
    cells3d_xy = (pose3d[..., :2] * S / BOX + (S - 1) / 2 - (STRIDE - 1) / 2) / STRIDE
    cells3d_z = (pose3d[..., 2:] / BOX + 0.5) * (DEPTH - 1)
    coords2d, coords3d = make_head(joints).decode(head_logits(cells2d, torch.cat([cells3d_xy, cells3d_z], -1)))

    assert_close_at_scale(coords2d, pixels, rtol=1e-5)
    assert_close_at_scale(coords3d, pose3d, rtol=5e-5)  # float32 softmax rounding over the depth cells


def test_soft_argmax_is_the_expectation_over_linspace_coordinates():
    logits = torch.randn(2, 5, 4, 6)
    probs = logits.flatten(-2).softmax(-1).view_as(logits)
    expected_row = (probs.sum(-1) * torch.linspace(0, 1, 4)).sum(-1)
    expected_col = (probs.sum(-2) * torch.linspace(0, 1, 6)).sum(-1)
    torch.testing.assert_close(soft_argmax(logits, 2), torch.stack([expected_row, expected_col], -1))


def test_decoding_maps_match_the_reference_formula_up_to_the_pixel_centre_convention():
    t = torch.linspace(0, 1, 11)
    for size, stride in [(256, 32), (128, 16), (384, 32)]:
        reference = stride // 2 + t * (size - 1 - ((size - 1) % stride))  # isarandi/metrabs, centred stride
        torch.testing.assert_close(heatmap_to_image(t, size, stride), reference - 0.5)
    coords = torch.tensor([0.0, 1.0, 0.0])
    expected = torch.tensor([(7.5 - 63.5) * BOX / S, (119.5 - 63.5) * BOX / S, -BOX / 2])
    torch.testing.assert_close(heatmap_to_metric(coords, S, STRIDE, BOX), expected)


def test_decoding_runs_in_float32_under_autocast():
    head = make_head(4)
    features = torch.randn(2, 8, CELLS, CELLS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        coords2d, coords3d = head(features)
    assert coords2d.dtype == coords3d.dtype == torch.float32


def test_head_rejects_features_of_the_wrong_resolution():
    with pytest.raises(RuntimeError, match=r"expected \(8, 8\).*stride does not match"):
        make_head(4)(torch.randn(1, 8, 4, 4))


# -- backbones -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [16, 32])
def test_small_cnn_is_small_and_has_the_requested_stride(stride):
    backbone = build_backbone("small_cnn", stride=stride)
    params = sum(p.numel() for p in backbone.parameters())
    assert 1e6 < params < 3e6
    assert backbone(torch.rand(2, 3, S, S)).shape == (2, backbone.out_channels, S // stride, S // stride)


@pytest.mark.parametrize("stride", [4, 8, 16])
def test_small_cnn_pyramid_has_the_requested_stride_and_sees_the_whole_crop(stride):
    backbone = build_backbone("small_cnn_pyramid", stride=stride).eval()
    for module in backbone.modules():  # residual blocks start as identities; open them, as training does
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(module.weight)
    images = torch.rand(1, 3, 64, 64)
    features = backbone(images)
    assert features.shape == (1, backbone.out_channels, 64 // stride, 64 // stride)
    # the coarsest level covers the whole crop, so a change in one corner reaches the opposite corner's cell
    changed = images.clone()
    changed[..., :8, :8] = 1 - changed[..., :8, :8]
    assert not torch.allclose(backbone(changed)[..., -1, -1], features[..., -1, -1])


@pytest.mark.parametrize("stride", [16, 32])
def test_resnet18_has_the_requested_stride(stride):
    backbone = build_backbone("resnet18", stride=stride)
    assert backbone(torch.rand(1, 3, 64, 64)).shape == (1, 512, 64 // stride, 64 // stride)


def test_backbone_loads_a_local_checkpoint_ignoring_its_classifier(tmp_path):
    source = build_backbone("resnet18")
    state = dict(source.body.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # as in torchvision files
    torch.save(state, tmp_path / "resnet18.pth")
    loaded = build_backbone("resnet18", weights=tmp_path / "resnet18.pth")
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name

    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial.pth: do not match the backbone \(missing"):
        build_backbone("resnet18", weights=tmp_path / "partial.pth")


def test_unknown_backbone_and_missing_timm_are_named(monkeypatch):
    with pytest.raises(ValueError, match=r"backbone: unknown name 'vgg'.*small_cnn"):
        build_backbone("vgg")
    assert {"small_cnn", "resnet18", "resnet50", "efficientnetv2_s"} <= set(available_backbones())
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail as if not installed
    with pytest.raises(ImportError, match="'efficientnetv2_s' needs the 'timm' package"):
        build_backbone("efficientnetv2_s")


def test_small_cnn_rejects_unsupported_strides():
    with pytest.raises(ValueError, match=r"stride: small_cnn supports strides \[4, 8, 16, 32\], got 64"):
        build_backbone("small_cnn", stride=64)


# -- output joints ---------------------------------------------------------------------------------
def test_union_joints_give_each_skeleton_its_own_outputs():
    names = union_joint_names(["h36m_17", "smpl_24"])
    h36m, smpl = get_skeleton("h36m_17"), get_skeleton("smpl_24")
    assert len(names) == h36m.num_joints + smpl.num_joints
    assert "lsho_h36m_17" in names and "lsho_smpl_24" in names
    smpl_indices = skeleton_joint_indices(names, "smpl_24")
    assert [names[i] for i in smpl_indices] == [f"{j}_smpl_24" for j in smpl.joint_names]

    permutation = mirror_permutation(names)
    assert names[permutation[names.index("lsho_h36m_17")]] == "rsho_h36m_17"
    np.testing.assert_array_equal(permutation[smpl_indices], np.asarray(smpl_indices)[smpl.mirror_indices])
    np.testing.assert_array_equal(permutation[permutation], np.arange(len(names)))


def test_union_joint_names_split_back_into_joint_and_format():
    formats = ["blazepose_33", "h36m_17", "smpl_24", "coco_19"]  # blazepose has joints like 'leye_inner'
    names = union_joint_names(formats)
    expected = [(joint, name) for name in formats for joint in get_skeleton(name).joint_names]
    assert [split_union_joint_name(n) for n in names] == expected
    with pytest.raises(ValueError, match=r"'lsho_nosuchformat' is not '<joint>_<format>'"):
        split_union_joint_name("lsho_nosuchformat")


def test_missing_skeleton_outputs_are_named():
    names = union_joint_names(["h36m_17"])
    with pytest.raises(ValueError, match=r"skeleton 'smpl_24': the model has no output for joints"):
        skeleton_joint_indices(names, "smpl_24")
    with pytest.raises(ValueError, match="listed more than once"):
        union_joint_names(["h36m_17", "h36m_17"])


# -- the model -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config():
    return MetrabsConfig.for_skeletons(["h36m_17", "lsp_14"])


@pytest.fixture(scope="module")
def model(config):
    torch.manual_seed(0)
    return MetrabsModel(config).eval()


def camera(batch: int, focal: float = 180.0) -> torch.Tensor:
    K = torch.tensor([[focal, 0.3, 62.0], [0.0, focal * 1.02, 65.0], [0.0, 0.0, 1.0]])
    return K.repeat(batch, 1, 1)


def images(batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, S, S, 3), generator=g, dtype=torch.uint8)


def test_forward_returns_pixels_relative_and_absolute_poses(model, config):
    out = model(images(2), camera(2))
    joints = len(config.joint_names)
    assert out["coords2d"].shape == (2, joints, 2)
    assert out["coords3d_rel"].shape == out["coords3d_abs"].shape == (2, joints, 3)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_uint8_channels_last_and_float_channels_first_images_agree(model):
    uint8 = images(2)
    as_float = uint8.permute(0, 3, 1, 2).float() / 255
    a, b = model(uint8, camera(2)), model(as_float, camera(2))
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    c = model(uint8.numpy(), camera(2).numpy())
    torch.testing.assert_close(a["coords3d_abs"], c["coords3d_abs"])


def test_bad_inputs_raise_naming_the_argument(model):
    with pytest.raises(ValueError, match=r"images: expected uint8 \[B, 128, 128, 3\] or float \[B, 3, 128, 128\].*got shape \(2, 96, 96, 3\)"):
        model(torch.zeros(2, 96, 96, 3, dtype=torch.uint8), camera(2))
    with pytest.raises(ValueError, match="images: expected .* got dtype torch.int32"):
        model(torch.zeros(2, S, S, 3, dtype=torch.int32), camera(2))
    K = camera(2)
    K[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"intrinsics: expected finite camera matrices, got non-finite values in examples \[1\]"):
        model(images(2), K)
    with pytest.raises(ValueError, match=r"intrinsics: expected shape \[2, 3, 3\], got \(3, 3\)"):
        model(images(2), camera(1)[0])


def test_config_rejects_inconsistent_geometry():
    with pytest.raises(ValueError, match="image_size: expected a multiple of stride"):
        MetrabsConfig(joint_names=("a",), image_size=120, stride=16)
    with pytest.raises(ValueError, match="depth"):
        MetrabsConfig(joint_names=("a",), depth=1)
    with pytest.raises(ValueError, match="backbone: unknown name"):
        MetrabsConfig(joint_names=("a",), backbone="vgg")
    with pytest.raises(ValueError, match="joint_names"):
        MetrabsConfig(joint_names=("a", "a"))


def mirror_outputs(out, model):
    return {
        "coords2d": mirror_pose_2d(out["coords2d"], S, model.mirror_indices),
        "coords3d_rel": mirror_pose_3d(out["coords3d_rel"], model.mirror_indices),
        "coords3d_abs": mirror_pose_3d(out["coords3d_abs"], model.mirror_indices),
    }


def test_flip_test_time_augmentation_is_flip_equivariant(model):
    crops, K = images(3), camera(3)
    on_flipped = model.predict(crops.flip(2), flip_intrinsics(K, S), flip_test=True)
    mirrored = mirror_outputs(model.predict(crops, K, flip_test=True), model)
    # the absolute pose comes from a least-squares solve that amplifies float32 rounding by its condition:
    # an untrained net's 2D joints crowd the crop centre, which leaves the depth poorly determined (its
    # error reaches about 1e-4 of the coordinates on some CPUs), while the mirrored heatmap outputs are exact
    for key, rtol in [("coords2d", 1e-5), ("coords3d_rel", 1e-5), ("coords3d_abs", 1e-3)]:
        assert_close_at_scale(on_flipped[key], mirrored[key], rtol=rtol)
    # the augmentation changes the prediction (an untrained net is far from flip-equivariant)
    plain = model.predict(crops, K)
    assert (plain["coords3d_rel"] - mirror_outputs(model.predict(crops, K), model)["coords3d_rel"]).abs().max() > 1


def test_predict_uses_eval_mode_and_restores_the_training_flag(config):
    torch.manual_seed(0)
    net = MetrabsModel(config).train()
    crops, K = images(2), camera(2)
    single = net.predict(crops[:1], K[:1])
    assert net.training
    together = net.predict(crops, K)
    # BatchNorm with batch statistics would make the first example's result depend on the second
    assert_close_at_scale(together["coords2d"][:1], single["coords2d"], rtol=1e-4)
    assert_close_at_scale(together["coords3d_rel"][:1], single["coords3d_rel"], rtol=1e-4)
    assert not together["coords3d_abs"].requires_grad


def test_save_and_load_round_trip(model, tmp_path):
    path = model.save(tmp_path / "models" / "metrabs.pt")
    loaded = MetrabsModel.load(path).eval()
    assert loaded.config == model.config
    crops, K = images(2), camera(2)
    torch.testing.assert_close(loaded.predict(crops, K)["coords3d_abs"], model.predict(crops, K)["coords3d_abs"])
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a MeTRAbs model file"):
        MetrabsModel.load(tmp_path / "other.pt")


def test_mixed_precision_forward_stays_finite_in_float32(model):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(2), camera(2))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())


def test_training_mode_draws_the_mix_per_example(config):
    torch.manual_seed(0)
    net = MetrabsModel(config).train()
    crops, K = images(4), camera(4)
    torch.manual_seed(1)
    first = net(crops, K)["coords3d_abs"]
    torch.manual_seed(2)
    second = net(crops, K)["coords3d_abs"]
    assert not torch.allclose(first, second)
    fixed = [net(crops, K, mix_3d_inside_fov=0.5)["coords3d_abs"] for _ in range(2)]
    torch.testing.assert_close(fixed[0], fixed[1])


def test_one_optimisation_step_lowers_the_loss_on_a_fixed_batch(config):
    torch.manual_seed(0)
    net = MetrabsModel(config).train()
    batch = 8
    crops, K = images(batch, seed=3), camera(batch)
    g = torch.Generator().manual_seed(4)
    gt = torch.randn(batch, len(config.joint_names), 3, generator=g) * 300
    gt[..., 2] += 4000
    gt[:, :3] = float("nan")  # unlabelled joints
    settings = LossSettings.from_config(config, abs_start_step=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def loss():
        out = net(crops, K, mix_3d_inside_fov=0.5)
        return loss_3d_batch(out["coords3d_abs"], gt, K, settings=settings, step=0)["total"]

    before = loss()
    optimizer.zero_grad()
    before.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    optimizer.step()
    assert loss().item() < before.item()
    assert math.isfinite(before.item())


def test_own_format_joints_compute_only_those_and_reconstruct_each_format_on_its_own():
    from model.reconstruction import is_within_fov, reconstruct_absolute

    skeletons = ("h36m_17", "smpl_24", "coco_19")
    model = MetrabsModel(MetrabsConfig(joint_names=union_joint_names(skeletons), backbone="small_cnn",
                                       image_size=64, stride=8)).eval()
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8, generator=generator)
    intrinsics = torch.tensor([[80.0, 0, 31.5], [0, 80.0, 31.5], [0, 0, 1]]).expand(5, 3, 3).contiguous()
    labelled_in = ["smpl_24", "h36m_17", "smpl_24", "coco_19", "h36m_17"]
    with torch.no_grad():
        full = model(images, intrinsics, mix_3d_inside_fov=0.5)
        grouped = model(images, intrinsics, mix_3d_inside_fov=0.5, own_joints=model.own_format_joints(labelled_in))
    for row, skeleton in enumerate(labelled_in):
        own = model.joint_indices(skeleton)
        others = [j for j in range(len(model.joint_names)) if j not in own]
        for key in ("coords2d", "coords3d_rel"):
            torch.testing.assert_close(grouped[key][row, own], full[key][row, own], rtol=1e-4, atol=1e-3)
            assert torch.all(grouped[key][row, others] == 0)
        coords2d, coords3d_rel = full["coords2d"][row:row + 1, own], full["coords3d_rel"][row:row + 1, own]
        expected = reconstruct_absolute(coords2d, coords3d_rel, intrinsics[row:row + 1],
                                        is_in_fov=is_within_fov(coords2d, 64, 8), mix_3d_inside_fov=0.5)
        # a least-squares solve: float32 rounding grows with its condition, so the tolerance is a share of
        # the pose's size, far below how much the reconstruction from every format's joints differs
        tolerance = 1e-3 * float(expected.abs().max())
        torch.testing.assert_close(grouped["coords3d_abs"][row:row + 1, own], expected, rtol=0, atol=tolerance)
        assert float((full["coords3d_abs"][row:row + 1, own] - expected).abs().max()) > 10 * tolerance


def test_examples_marked_everything_compute_every_joint_as_without_own_joints():
    model = MetrabsModel(MetrabsConfig(joint_names=union_joint_names(("h36m_17", "smpl_24")), backbone="small_cnn",
                                       image_size=64, stride=8)).eval()
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(4))
    intrinsics = torch.tensor([[80.0, 0, 31.5], [0, 80.0, 31.5], [0, 0, 1]]).expand(3, 3, 3).contiguous()
    own = model.own_format_joints(["smpl_24", "h36m_17", "smpl_24"], everything=torch.tensor([False, True, False]))
    with torch.no_grad():
        full = model(images, intrinsics, mix_3d_inside_fov=0.5)
        mixed = model(images, intrinsics, mix_3d_inside_fov=0.5, own_joints=own)
    for key in ("coords2d", "coords3d_rel", "coords3d_abs"):
        scale = float(full[key][1].abs().max())
        torch.testing.assert_close(mixed[key][1], full[key][1], rtol=0, atol=1e-5 * scale)
    assert torch.all(mixed["coords3d_abs"][0, model.joint_indices("h36m_17")] == 0)
