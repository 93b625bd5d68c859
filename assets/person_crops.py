"""How a person is cut out of a whole image: one convention for training crops and for inference.

The crop is a square, undistorted virtual camera at the original camera's optical centre, turned to look
at the centre of the person's box, whose field of view spans the box's larger side times
``BOX_PADDING``. Converters (``assets.converters.common.canonical_crop``) and ``detect_poses``
(``model.detection``) both go through ``person_crop_camera``, so the model sees people at inference
exactly as it saw them in training.
"""

import numpy as np

from assets.cameras import Camera

# the square crop side relative to the larger side of the tight box around the person
BOX_PADDING = 1.3


def person_crop_camera(frame_camera: Camera, box_xywh, size: int, padding: float = BOX_PADDING) -> Camera:
    """The virtual ``size`` x ``size`` pinhole camera that frames the person in ``box_xywh`` (frame pixels)."""
    box = np.asarray(box_xywh, dtype=np.float64)
    center_uv = box[:2] + box[2:] / 2
    center_ray = np.append(frame_camera.image_to_normalized(center_uv), 1.0)
    side_px = max(box[2], box[3], 1.0) * padding
    # the box's angular size at the principal ray decides the virtual focal length
    ends = frame_camera.image_to_normalized(np.array([center_uv - [side_px / 2, 0], center_uv + [side_px / 2, 0]]))
    side_normalized = max(np.linalg.norm(ends[1] - ends[0]), 1e-6)
    return frame_camera.looking_at(center_ray, size / side_normalized, size)
