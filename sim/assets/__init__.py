"""Data files for the PyBullet twin (robot descriptions); see panda/README.md."""
