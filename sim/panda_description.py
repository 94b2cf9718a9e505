"""Franka Emika Panda description for the PyBullet twin, with identified inertial parameters.

pybullet_data ships ``franka_panda/panda.urdf`` with placeholder dynamics (an inertia of 0.1 on
every link, guessed masses). This module provides our own description instead:

* kinematics from Franka's modified Denavit-Hartenberg table (FCI documentation), the same
  joint frames as pybullet_data's file and franka_description's ``panda_link0..8``;
* masses, centres of mass and inertia tensors of ``panda_link1..7`` from Gaz, Cognetti, Oliva,
  Robuffo Giordano, De Luca, "Dynamic Identification of the Franka Emika Panda Robot With
  Retrieval of Feasible Parameters Using Penalty-Based Optimization", IEEE RA-L 2019;
* Franka's published figures for the Franka Hand, and marked estimates where nothing is
  published (base, fingers);
* joint limits from Franka's datasheet.

``sim/assets/panda/README.md`` lists where every number comes from and how PyBullet treats the
inertia tensors (it diagonalises them itself; the off-diagonal terms are kept).

The URDF is stored as a template (``panda.urdf.in``) whose mesh paths start with the placeholder
``{mesh_dir}``; we ship no meshes and use pybullet_data's. :func:`panda_urdf_path` fills the
placeholder and returns the path of a ready-to-load file. Load it with
``pybullet.URDF_USE_INERTIA_FROM_FILE``, or PyBullet recomputes the inertias from the collision
meshes and the identified values are lost::

    body = pybullet.loadURDF(
        str(panda_urdf_path()), useFixedBase=True, flags=pybullet.URDF_USE_INERTIA_FROM_FILE
    )
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

__all__ = ["PANDA_LINK_MASSES_KG", "PANDA_URDF_TEMPLATE", "panda_urdf_path"]

PANDA_URDF_TEMPLATE: Path = Path(__file__).resolve().parent / "assets" / "panda" / "panda.urdf.in"
"""The URDF template; its mesh file names start with ``{mesh_dir}``."""

PANDA_LINK_MASSES_KG: dict[str, float] = {
    # Estimate: datasheet arm mass (about 18 kg) minus the identified masses of links 1-7.
    "panda_link0": 1.94,
    # Gaz et al. 2019, identified feasible parameters.
    "panda_link1": 4.970684,
    "panda_link2": 0.646926,
    "panda_link3": 3.228604,
    "panda_link4": 3.587895,
    "panda_link5": 1.225946,
    "panda_link6": 1.666555,
    "panda_link7": 0.735522,
    # Frame only (flange).
    "panda_link8": 0.0,
    # Franka Hand: 0.73 kg in all, of which 2 x 0.015 kg are the fingers.
    "panda_hand": 0.70,
    "panda_leftfinger": 0.015,
    "panda_rightfinger": 0.015,
    # Frame only (tool centre point).
    "panda_grasptarget": 0.0,
}
"""Mass of every link in the description, in kg (sources in ``sim/assets/panda/README.md``)."""

_MESH_PLACEHOLDER = "{mesh_dir}"
_DEFAULT_CACHE_DIR_NAME = "robot-rl-assets"
_PYBULLET_HINT = "install pybullet, which ships pybullet_data (pip install pybullet==3.2.7)"


def _pybullet_mesh_dir() -> Path:
    """Return the absolute path of pybullet_data's ``franka_panda/meshes`` folder."""
    try:
        import pybullet_data  # lazily, so that a missing package becomes a clear error
    except ImportError as exc:
        raise FileNotFoundError(
            "pybullet_data is not importable, so the Panda meshes cannot be found: "
            + _PYBULLET_HINT
        ) from exc
    return (Path(pybullet_data.getDataPath()) / "franka_panda" / "meshes").resolve()


def _check_meshes(template: str, mesh_dir: Path) -> None:
    """Raise FileNotFoundError naming every mesh the template needs but ``mesh_dir`` lacks."""
    needed = sorted(set(re.findall(re.escape(_MESH_PLACEHOLDER) + r"/([^\"'<>\s]+)", template)))
    missing = [name for name in needed if not (mesh_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Panda meshes missing from {mesh_dir}: {', '.join(missing)}. They come with "
            f"pybullet_data's franka_panda model: {_PYBULLET_HINT}"
        )


def panda_urdf_path(cache_dir: Path | None = None) -> Path:
    """Return the path of the resolved Panda URDF, writing it first if needed.

    The template's ``{mesh_dir}`` placeholder is replaced by the absolute path of pybullet_data's
    ``franka_panda/meshes`` folder. The result goes to ``cache_dir`` (default: a folder
    ``robot-rl-assets`` under :func:`tempfile.gettempdir`) under a name keyed by a short hash of
    the template's contents and the mesh folder, so the same inputs always give the same path
    and a changed template never reuses a stale file. The file is written to a temporary name
    and moved into place with :func:`os.replace`, so concurrent processes never see a
    half-written URDF.

    Args:
        cache_dir: Folder for the resolved URDF; created if missing.

    Returns:
        Absolute path of the resolved URDF.

    Raises:
        FileNotFoundError: If the template, pybullet_data or one of the meshes is missing.
    """
    if not PANDA_URDF_TEMPLATE.is_file():
        raise FileNotFoundError(
            f"Panda URDF template not found at {PANDA_URDF_TEMPLATE}; the package was installed "
            "without its data files (pyproject.toml must ship sim/assets/panda/panda.urdf.in)."
        )
    template = PANDA_URDF_TEMPLATE.read_text(encoding="utf-8")
    mesh_dir = _pybullet_mesh_dir()
    _check_meshes(template, mesh_dir)

    resolved = template.replace(_MESH_PLACEHOLDER, escape(mesh_dir.as_posix(), {'"': "&quot;"}))
    key = hashlib.sha256(
        template.encode("utf-8") + b"\0" + mesh_dir.as_posix().encode("utf-8")
    ).hexdigest()[:12]

    folder = (
        Path(tempfile.gettempdir()) / _DEFAULT_CACHE_DIR_NAME if cache_dir is None else cache_dir
    )
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"panda-{key}.urdf"

    try:
        if target.read_text(encoding="utf-8") == resolved:
            return target
    except (FileNotFoundError, UnicodeDecodeError):
        pass

    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(resolved)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
