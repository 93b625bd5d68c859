"""Pinhole camera with OpenCV lens distortion, vectorised over any number of points.

Conventions: millimetres; camera frame x right, y down, z forward; ``x_cam = R @ x_world + t``;
distortion coefficients (k1, k2, p1, p2, k3) act on normalised image coordinates, so cropping or
scaling an image changes only ``K``.
"""

from dataclasses import dataclass

import numpy as np

_UNDISTORT_ITERATIONS = 20


def _as_matrix(value, shape, name) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"camera field {name!r}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"camera field {name!r}: contains non-finite values: {arr.tolist()}")
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

    def __post_init__(self):
        object.__setattr__(self, "K", _as_matrix(self.K, (3, 3), "K"))
        dist = np.zeros(5) if self.dist is None else np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if dist.shape[0] < 5:
            dist = np.concatenate([dist, np.zeros(5 - dist.shape[0])])
        object.__setattr__(self, "dist", _as_matrix(dist, (5,), "dist"))
        object.__setattr__(self, "R", _as_matrix(np.eye(3) if self.R is None else self.R, (3, 3), "R"))
        object.__setattr__(self, "t", _as_matrix(np.zeros(3) if self.t is None else self.t, (3,), "t"))
        if abs(self.K[2, 2] - 1) > 1e-9 or np.any(self.K[2, :2] != 0) or self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ValueError(f"camera field 'K': expected [[fx,s,cx],[0,fy,cy],[0,0,1]] with fx,fy>0, got {self.K.tolist()}")

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
        # Pixel centres: pixel i spans [i, i+1); the affine map above is exact for that convention
        return Camera(K=A @ self.K, dist=self.dist, R=self.R, t=self.t)

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
        return Camera(K=K, dist=np.zeros(5), R=rot_new_from_old @ self.R, t=rot_new_from_old @ self.t)

    def __repr__(self) -> str:
        return f"Camera(K={self.K.tolist()}, dist={self.dist.tolist()}, R={self.R.tolist()}, t={self.t.tolist()})"


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
