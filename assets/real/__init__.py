"""Real recordings: acquiring public multi-view videos and calibrations, and detecting people in them.

- ``cache``: the download cache (``data/cache`` or ``$DOZENS_CACHE``): the Pose2Sim wheel with its demo
  recording, and the separate virtualenv that runs MediaPipe.
- ``qca``: Qualisys ``.qca.txt`` calibrations as ``Camera`` objects.
- ``blazepose``: the BlazePose landmark format and the detection runner (a subprocess in that venv).
- ``pose2sim``: builds the raw ``pose2sim_demo`` dataset (``python -m assets.real.pose2sim``).
- ``pose2sim_multi``: builds the raw ``pose2sim_multi`` dataset, tracked people of the multi-person demo
  (``python -m assets.real.pose2sim_multi``).
- ``recording``: what the two builds share (calibration files, synchronisation, rebuild checks).
"""
