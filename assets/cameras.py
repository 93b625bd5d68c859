"""Pinhole camera with OpenCV lens distortion, vectorised over any number of points.

Conventions: millimetres; camera frame x right, y down, z forward; ``x_cam = R @ x_world + t``;
distortion coefficients (k1, k2, p1, p2, k3) act on normalised image coordinates, so cropping or
scaling an image changes only ``K``.

``Camera`` is one camera; ``CameraRig`` stacks several so that the same points are projected into (or
pixel observations undistorted in) every view with one set of array operations, as triangulation needs.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_UNDISTORT_ITERATIONS = 20


def _field_name(camera: str, field: str) -> str:
    return f"camera {camera!r} field {field!r}" if camera else f"camera field {field!r}"


def _as_matrix(value, shape, name, camera: str = "") -> np.ndarray:
    return _checked_array(value, shape, _field_name(camera, name))


def _checked_array(value, shape, where: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{where}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: contains non-finite values: {arr.tolist()}")
    return arr


def distort_normalized(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    k1, k2, p1, p2, k3 = dist
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort_normalized(xy_distorted: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Inverse of distort_normalized by fixed-point iteration (as OpenCV's undistortPoints)."""
    if not np.any(dist):
        return xy_distorted.copy()
    k1, k2, p1, p2, k3 = dist
    xd, yd = xy_distorted[..., 0], xy_distorted[..., 1]
    x, y = xd.copy(), yd.copy()
    for _ in range(_UNDISTORT_ITERATIONS):
        r2 = x * x + y * y
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x = (xd - dx) / radial
        y = (yd - dy) / radial
    return np.stack([x, y], axis=-1)


@dataclass(frozen=True, eq=False)
class Camera:
    K: np.ndarray
    dist: np.ndarray = None
    R: np.ndarray = None
    t: np.ndarray = None
    name: str = ""  # only for error messages; derived cameras (crops, virtual views) keep it

    def __post_init__(self):
        name = self.name
        object.__setattr__(self, "K", _as_matrix(self.K, (3, 3), "K", name))
        dist = np.zeros(5) if self.dist is None else np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if dist.shape[0] < 5:
            dist = np.concatenate([dist, np.zeros(5 - dist.shape[0])])
        object.__setattr__(self, "dist", _as_matrix(dist, (5,), "dist", name))
        object.__setattr__(self, "R", _as_matrix(np.eye(3) if self.R is None else self.R, (3, 3), "R", name))
        object.__setattr__(self, "t", _as_matrix(np.zeros(3) if self.t is None else self.t, (3,), "t", name))
        if abs(self.K[2, 2] - 1) > 1e-9 or np.any(self.K[2, :2] != 0) or self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ValueError(f"{_field_name(name, 'K')}: expected [[fx,s,cx],[0,fy,cy],[0,0,1]] with fx,fy>0, "
                             f"got {self.K.tolist()}")

    # -- frames ---------------------------------------------------------------------------
    @property
    def center(self) -> np.ndarray:
        """Optical centre in world coordinates."""
        return -self.R.T @ self.t

    @property
    def extrinsic_matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.R, self.t
        return m

    @property
    def projection_matrix(self) -> np.ndarray:
        """3x4 ``K [R | t]``: maps homogeneous world points to *undistorted* homogeneous pixels."""
        return self.K @ self.extrinsic_matrix[:3]

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) @ self.R.T + self.t

    def camera_to_world(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.t) @ self.R

    # -- image ----------------------------------------------------------------------------
    def camera_to_image(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        xy = points[..., :2] / points[..., 2:3]
        return self.normalized_to_image(distort_normalized(xy, self.dist))

    def world_to_image(self, points: np.ndarray) -> np.ndarray:
        return self.camera_to_image(self.world_to_camera(points))

    def normalized_to_image(self, xy: np.ndarray) -> np.ndarray:
        K = self.K
        u = K[0, 0] * xy[..., 0] + K[0, 1] * xy[..., 1] + K[0, 2]
        v = K[1, 1] * xy[..., 1] + K[1, 2]
        return np.stack([u, v], axis=-1)

    def image_to_normalized(self, uv: np.ndarray) -> np.ndarray:
        """Undistorted normalised coordinates (x/z, y/z) of pixel positions."""
        uv = np.asarray(uv, dtype=np.float64)
        K = self.K
        y = (uv[..., 1] - K[1, 2]) / K[1, 1]
        x = (uv[..., 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
        return undistort_normalized(np.stack([x, y], axis=-1), self.dist)

    def undistort_points(self, uv: np.ndarray) -> np.ndarray:
        """Pixel positions as the same camera without lens distortion would see them."""
        return self.normalized_to_image(self.image_to_normalized(uv))

    def image_to_camera(self, uv: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
        xy = self.image_to_normalized(uv)
        depth = np.asarray(depth, dtype=np.float64)[..., None]
        return np.concatenate([xy * depth, depth], axis=-1)

    # -- derived cameras ------------------------------------------------------------------
    def cropped(self, box_xywh, out_size: tuple[int, int]) -> "Camera":
        """Camera of the image region ``box_xywh`` resampled to ``out_size`` (width, height)."""
        x0, y0, w, h = (float(v) for v in box_xywh)
        sx, sy = out_size[0] / w, out_size[1] / h
        A = np.array([[sx, 0, -sx * x0], [0, sy, -sy * y0], [0, 0, 1.0]])
        # Pixel centres sit on integer coordinates everywhere in this project: file pixel u shows frame
        # point x0 + u·w/W, which is exactly the affine map above
        return Camera(K=A @ self.K, dist=self.dist, R=self.R, t=self.t, name=self.name)

    def looking_at(self, point_camera: np.ndarray, focal: float, size: int) -> "Camera":
        """Undistorted virtual camera at the same centre, rotated so ``point_camera`` is at the image centre."""
        forward = np.asarray(point_camera, dtype=np.float64)
        forward = forward / np.linalg.norm(forward)
        # keep the original 'down' direction as close as possible (no roll)
        down = np.array([0.0, 1.0, 0.0])
        right = np.cross(down, forward)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rot_new_from_old = np.stack([right, down, forward])
        K = np.array([[focal, 0, (size - 1) / 2], [0, focal, (size - 1) / 2], [0, 0, 1.0]])
        return Camera(K=K, dist=np.zeros(5), R=rot_new_from_old @ self.R, t=rot_new_from_old @ self.t,
                      name=self.name)

    def __repr__(self) -> str:
        named = f", name={self.name!r}" if self.name else ""
        return (f"Camera(K={self.K.tolist()}, dist={self.dist.tolist()}, R={self.R.tolist()}, "
                f"t={self.t.tolist()}{named})")


def distortion_jacobian(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """d(distort_normalized)/d(xy) as [..., 2, 2]; ``dist`` unpacks along its first axis like there."""
    k1, k2, p1, p2, k3 = dist
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
    dxd_dx = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
    dyd_dy = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
    cross = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y  # d xd/dy == d yd/dx for this model
    return np.stack([np.stack([dxd_dx, cross], -1), np.stack([cross, dyd_dy], -1)], -2)


class CameraRig:
    """Several cameras stacked into arrays, so points are mapped in every view with one array expression.

    World points [..., 3] are shared by all cameras and come back per camera as [C, ..., k]; pixel
    observations go in per camera as [C, ..., 2]. Construction re-validates every camera (their arrays
    are mutable) and errors name the camera by index and name.
    """

    def __init__(self, cameras: Sequence[Camera]):
        cameras = list(cameras)
        if not cameras:
            raise ValueError("cameras: expected at least one Camera, got none")
        for i, cam in enumerate(cameras):
            if not isinstance(cam, Camera):
                raise ValueError(f"cameras[{i}]: expected a Camera, got {type(cam).__name__}")
        self.cameras = tuple(cameras)
        self.names = tuple(cam.name or f"#{i}" for i, cam in enumerate(cameras))
        fields = {}
        for field, shape in (("K", (3, 3)), ("dist", (5,)), ("R", (3, 3)), ("t", (3,))):
            for i, cam in enumerate(cameras):
                _checked_array(getattr(cam, field), shape, f"camera {i} ({self.names[i]}) field {field!r}")
            fields[field] = np.stack([getattr(cam, field) for cam in cameras])
        self.K, self.dist, self.R, self.t = fields["K"], fields["dist"], fields["R"], fields["t"]

    def __len__(self) -> int:
        return len(self.cameras)

    def __getitem__(self, index: int) -> Camera:
        return self.cameras[index]

    @property
    def centers(self) -> np.ndarray:
        """[C, 3] optical centres in world coordinates."""
        return -np.einsum("cji,cj->ci", self.R, self.t)

    @property
    def focal_lengths(self) -> np.ndarray:
        """[C, 2] (fx, fy) in pixels."""
        return np.stack([self.K[:, 0, 0], self.K[:, 1, 1]], axis=-1)

    @property
    def extrinsic_matrices(self) -> np.ndarray:
        """[C, 3, 4] ``[R | t]``: homogeneous world points to undistorted *normalised* coordinates."""
        return np.concatenate([self.R, self.t[:, :, None]], axis=-1)

    @property
    def projection_matrices(self) -> np.ndarray:
        """[C, 3, 4] ``K [R | t]``: homogeneous world points to undistorted pixels."""
        return self.K @ self.extrinsic_matrices

    def _per_camera(self, arr: np.ndarray, batch_ndim: int) -> np.ndarray:
        """[C, *tail] -> [C, 1 x batch_ndim, *tail], to broadcast over [C, *batch, *tail]."""
        return arr.reshape(arr.shape[:1] + (1,) * batch_ndim + arr.shape[1:])

    def _coefficients(self, batch_ndim: int) -> np.ndarray:
        """Distortion coefficients as [5, C, 1 x batch_ndim] for ``distort_normalized``'s unpacking."""
        return self.dist.T.reshape((5, len(self)) + (1,) * batch_ndim)

    def _check_per_camera(self, arr: np.ndarray, name: str, last: int) -> np.ndarray:
        arr = np.asarray(arr, dtype=np.float64)
        if arr.ndim < 2 or arr.shape[0] != len(self) or arr.shape[-1] != last:
            raise ValueError(f"{name}: expected shape [{len(self)} cameras, ..., {last}], got {arr.shape}")
        return arr

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        # tensordot is one BLAS product for all cameras, several times faster than einsum or a
        # broadcast matmul with an inner dimension of 3
        rotated = np.moveaxis(np.tensordot(self.R, points, axes=([2], [-1])), 1, -1)
        return rotated + self._per_camera(self.t, points.ndim - 1)

    def camera_to_image(self, points_camera: np.ndarray) -> np.ndarray:
        """Distorted pixels [C, ..., 2] of per-camera camera-frame points [C, ..., 3]."""
        points_camera = self._check_per_camera(points_camera, "points_camera", 3)
        xy = points_camera[..., :2] / points_camera[..., 2:3]
        return self.normalized_to_image(distort_normalized(xy, self._coefficients(xy.ndim - 2)))

    def world_to_image(self, points: np.ndarray) -> np.ndarray:
        return self.camera_to_image(self.world_to_camera(points))

    def normalized_to_image(self, xy: np.ndarray) -> np.ndarray:
        xy = self._check_per_camera(xy, "xy", 2)
        K = self._per_camera(self.K, xy.ndim - 2)
        u = K[..., 0, 0] * xy[..., 0] + K[..., 0, 1] * xy[..., 1] + K[..., 0, 2]
        v = K[..., 1, 1] * xy[..., 1] + K[..., 1, 2]
        return np.stack([u, v], axis=-1)

    def image_to_normalized(self, uv: np.ndarray) -> np.ndarray:
        """Undistorted normalised coordinates [C, ..., 2] of per-camera pixel positions [C, ..., 2]."""
        uv = self._check_per_camera(uv, "uv", 2)
        K = self._per_camera(self.K, uv.ndim - 2)
        y = (uv[..., 1] - K[..., 1, 2]) / K[..., 1, 1]
        x = (uv[..., 0] - K[..., 0, 2] - K[..., 0, 1] * y) / K[..., 0, 0]
        return undistort_normalized(np.stack([x, y], axis=-1), self._coefficients(uv.ndim - 2))

    def undistort_points(self, uv: np.ndarray) -> np.ndarray:
        """Pixel positions [C, ..., 2] as the same cameras without lens distortion would see them."""
        return self.normalized_to_image(self.image_to_normalized(uv))

    def world_to_image_jacobian(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distorted pixels [C, ..., 2], their derivative by the world point [C, ..., 2, 3], depths [C, ...]."""
        points = np.asarray(points, dtype=np.float64)
        batch = points.ndim - 1
        cam = self.world_to_camera(points)
        depth = cam[..., 2]
        xy = cam[..., :2] / depth[..., None]
        coefficients = self._coefficients(batch)
        uv = self.normalized_to_image(distort_normalized(xy, coefficients))
        # d xy / d cam for the perspective division: [[1/z, 0, -x/z], [0, 1/z, -y/z]]
        inv_z = 1.0 / depth
        zero = np.zeros_like(inv_z)
        d_xy = np.stack([np.stack([inv_z, zero, -xy[..., 0] * inv_z], -1),
                         np.stack([zero, inv_z, -xy[..., 1] * inv_z], -1)], -2)
        chain = self._per_camera(self.K[:, :2, :2], batch) @ distortion_jacobian(xy, coefficients) @ d_xy
        return uv, chain @ self._per_camera(self.R, batch), depth


def reproject_image(
    image: np.ndarray, source: Camera, target: Camera, out_size: tuple[int, int], fill: int = 0
) -> np.ndarray:
    """Resample ``image`` (seen by ``source``) as ``target`` would see it; both share the optical centre.

    Bilinear interpolation; pixels that fall outside the source image get ``fill``.
    """
    w, h = out_size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_target = np.concatenate([target.image_to_normalized(np.stack([u, v], -1)), np.ones((h, w, 1))], axis=-1)
    rays_source = rays_target @ (source.R @ target.R.T).T
    src_uv = source.camera_to_image(rays_source)
    return bilinear_sample(image, src_uv, fill=fill)


def bilinear_sample(image: np.ndarray, uv: np.ndarray, fill: int = 0) -> np.ndarray:
    """Sample ``image`` [H,W,C] at pixel positions ``uv`` [...,2] (pixel centres at integers)."""
    H, W = image.shape[:2]
    x, y = uv[..., 0], uv[..., 1]
    inside = (x > -1) & (x < W) & (y > -1) & (y < H) & np.isfinite(x) & np.isfinite(y)
    x = np.where(inside, x, 0)
    y = np.where(inside, y, 0)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    img = image.astype(np.float32)
    pad = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="constant", constant_values=fill)
    xi, yi = x0 + 1, y0 + 1

    def at(yy, xx):
        return pad[np.clip(yy, 0, H + 1), np.clip(xx, 0, W + 1)]

    top = at(yi, xi) * (1 - fx) + at(yi, xi + 1) * fx
    bottom = at(yi + 1, xi) * (1 - fx) + at(yi + 1, xi + 1) * fx
    out = top * (1 - fy) + bottom * fy
    out[~inside] = fill
    if np.issubdtype(image.dtype, np.integer):
        out = np.clip(np.rint(out), np.iinfo(image.dtype).min, np.iinfo(image.dtype).max)
    return out.astype(image.dtype)
