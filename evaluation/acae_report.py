"""What a fitted affine-combining autoencoder learned: held-out errors per skeleton, sparsity, a plot."""

import numpy as np

from assets.joint_names import split_union_joint_name
from evaluation.plots import figure_png, plt
from evaluation.pose_pca import CentredPCA
from model.acae import fit_acae, reconstruction_errors
from model.settings import AcaeFitSettings

SPARSE_THRESHOLD = 1e-3


def skeleton_of(joint_name: str) -> str:
    """'leye_inner_blazepose_33' -> 'blazepose_33' (union joint names are '<joint>_<format>'); for a format
    that is not registered, everything after the first underscore."""
    try:
        return split_union_joint_name(joint_name)[1]
    except ValueError:
        return joint_name.split("_", 1)[-1]


def skeleton_masks(joint_names) -> dict[str, np.ndarray]:
    """{skeleton format: boolean mask over ``joint_names``}, formats in order of first appearance."""
    skeletons = np.array([skeleton_of(n) for n in joint_names])
    return {str(skeleton): skeletons == skeleton for skeleton in dict.fromkeys(skeletons)}


def errors_per_skeleton(acae, poses: np.ndarray) -> list[dict]:
    """Held-out reconstruction error (mm, 3D and projected) of each skeleton format's joints."""
    errors = acae.reconstruction_error(poses)
    rows = [{"skeleton": skeleton, "joints": int(mask.sum()),
             "error_3d_mm": float(np.nanmean(errors.per_joint_3d_mm[mask])),
             "error_projected_mm": float(np.nanmean(errors.per_joint_projected_mm[mask]))}
            for skeleton, mask in skeleton_masks(acae.joint_names).items()]
    rows.append({"skeleton": "all", "joints": acae.num_joints, "error_3d_mm": errors.mean_3d_mm,
                 "error_projected_mm": errors.mean_projected_mm})
    return rows


def baseline_rows(acae, train_poses: np.ndarray, held_out_poses: np.ndarray) -> list[dict]:
    """Held-out errors (mm) of ``acae`` next to two references fit on the same complete training poses:
    the closed-form best ACAE of the same shape without sparsity (what the sparsity term costs) and PCA
    with as many coordinates as the latents have (3·L). Only complete poses count (PCA needs them). A
    reference the data cannot support gets a row with a ``note`` saying why instead of errors."""
    train = train_poses[np.isfinite(train_poses).all(axis=(1, 2))]
    held_out = held_out_poses[np.isfinite(held_out_poses).all(axis=(1, 2))]
    if len(held_out) == 0:
        return []
    n_sided = sum(side != "center" for side in acae.latent_sides)
    components = 3 * acae.num_latents

    def closed_form():
        shape = AcaeFitSettings(n_latent_sided=n_sided, n_latent_center=acae.num_latents - n_sided, chiral=acae.chiral,
                                sides=acae.joint_sides, init="principal", steps=0)
        return fit_acae(train, acae.joint_names, shape).reconstruct(held_out)

    def pca():
        return CentredPCA(train, components).reconstruct(held_out)

    rows = []
    for method, reconstruct in (("this autoencoder", lambda: acae.reconstruct(held_out)),
                                ("same shape, no sparsity (closed form)", closed_form),
                                (f"PCA, {components} coordinates", pca)):
        row = {"method": method, "poses": len(held_out)}
        try:
            errors = reconstruction_errors(held_out, reconstruct())
        except ValueError as error:  # too few complete training poses for this reference
            row["note"] = f"not computed: {error}"
        else:
            row |= {"error_3d_mm": errors.mean_3d_mm, "error_projected_mm": errors.mean_projected_mm}
        rows.append(row)
    return rows


def baseline_markdown(rows: list[dict]) -> str:
    header = "| method | held-out poses | 3D error (mm) | projected error (mm) |\n|---|---|---|---|\n"
    if not rows:
        return header + "| (no complete held-out pose) | 0 | | |"
    return header + "\n".join(
        f"| {r['method']} | {r['poses']} | " + (f"{r['error_3d_mm']:.1f} | {r['error_projected_mm']:.1f} |"
                                                 if "note" not in r else f"{r['note']} | |") for r in rows)


def sparsity(acae) -> dict:
    return {name: float(np.mean(np.abs(w) < SPARSE_THRESHOLD))
            for name, w in (("encoder", acae.encoder_weights), ("decoder", acae.decoder_weights))}


def markdown_table(rows: list[dict]) -> str:
    header = "| skeleton | joints | held-out 3D error (mm) | held-out projected error (mm) |\n|---|---|---|---|\n"
    return header + "\n".join(f"| {r['skeleton']} | {r['joints']} | {r['error_3d_mm']:.1f} | "
                              f"{r['error_projected_mm']:.1f} |" for r in rows)


def latent_plot_png(acae, poses: np.ndarray, strongest: int = 2) -> bytes:
    """Latent points on the mean (root-centred) pose, each joined to its ``strongest`` encoder joints."""
    centred = poses - np.nanmean(poses, axis=1, keepdims=True)
    mean_pose = np.nanmean(centred, axis=0)
    latents = acae.encode(mean_pose[None])[0]
    weights = acae.encoder_weights  # [J, L]
    figure, axes = plt.subplots(figsize=(5, 6), dpi=100)
    axes.scatter(mean_pose[:, 0], mean_pose[:, 1], s=6, c="0.6", label="joints (all formats)")
    colours = {"left": "tab:blue", "right": "tab:red"}
    for l, side in enumerate(acae.latent_sides):
        colour = colours.get(side, "tab:green")
        for j in np.argsort(-weights[:, l])[:strongest]:
            axes.plot([latents[l, 0], mean_pose[j, 0]], [latents[l, 1], mean_pose[j, 1]], c=colour, lw=0.5, alpha=0.6)
    axes.scatter(latents[:, 0], latents[:, 1], s=18, c=[colours.get(s, "tab:green") for s in acae.latent_sides],
                 label="latents (blue left, red right, green centre)")
    axes.invert_yaxis()  # camera y points down
    axes.set_aspect("equal")
    axes.set(title="ACAE latent keypoints on the mean pose", xlabel="x (mm)", ylabel="y (mm)")
    axes.legend(fontsize=7, loc="lower right")
    return figure_png(figure)
