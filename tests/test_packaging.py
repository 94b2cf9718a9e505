"""The install claims only the robot_rl namespace, and every package folder is in it."""

import importlib
import pathlib

import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAPPED = {"controllers", "rewards", "sim", "hardware"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_folders() -> set[str]:
    names = set()
    for top in ["robot_rl", *sorted(MAPPED)]:
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            names.add(".".join(parts) if top == "robot_rl" else "robot_rl." + ".".join(parts))
    return names


def test_every_package_installs_under_the_robot_rl_namespace():
    packages = _pyproject()["tool"]["setuptools"]["packages"]
    assert all(p == "robot_rl" or p.startswith("robot_rl.") for p in packages), packages
    assert set(packages) == _package_folders()


def test_the_fixed_top_level_folders_map_into_the_namespace():
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {f"robot_rl.{name}": name for name in MAPPED}
    for name in MAPPED:
        module = importlib.import_module(f"robot_rl.{name}")
        assert pathlib.Path(module.__file__).resolve().parent == ROOT / name
