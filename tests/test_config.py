"""Config loading: YAML + overrides into frozen dataclasses; every mismatch names the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from robot_rl.sim.scene import SceneConfig

from robot_rl.config import ConfigError, load_config, to_dict


@dataclass(frozen=True)
class Inner:
    rate_hz: float = 10.0
    gains: np.ndarray = field(default_factory=lambda: np.ones(3))


@dataclass(frozen=True)
class Outer:
    name: str  # required
    mode: Literal["sim", "real"] = "sim"
    steps: int = 5
    size: tuple[int, int] = (128, 128)
    checkpoint: str | None = None
    inner: Inner = field(default_factory=Inner)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "name: a\nsteps: 7\ninner:\n  rate_hz: 20\n")
    cfg = load_config(Outer, path, ["inner.gains=[1, 2, 3.5]", "size=[64, 48]", "mode=real"])
    assert cfg == Outer("a", "real", 7, (64, 48), None, cfg.inner)
    assert cfg.inner.rate_hz == 20.0 and isinstance(cfg.inner.rate_hz, float)
    np.testing.assert_array_equal(cfg.inner.gains, [1.0, 2.0, 3.5])
    assert to_dict(cfg)["inner"]["gains"] == [1.0, 2.0, 3.5]


def test_round_trip_of_a_real_config() -> None:
    cfg = load_config(SceneConfig, None, ["task=peg_insert", "twin.seed=3"])
    assert cfg.task == "peg_insert" and cfg.twin.seed == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["name=a", "stepz=3"], "unknown key.*stepz.*allowed"),
        (["name=a", "inner.rate=3"], r"inner\.rate.*allowed.*rate_hz"),
        ([], "missing required key name"),
        (["name=a", "mode=hardware"], "mode='hardware'; allowed: 'sim', 'real'"),
        (["name=a", "steps=2.5"], "steps=2.5 must be an integer"),
        (["name=a", "steps=true"], "must be an integer"),
        (["name=a", "size=[1, 2, 3]"], "size must have 2 items"),
        (["name=a", "inner.gains=[1, .nan]"], "finite"),
        (["name=3"], "name=3 must be a string"),
        (["name"], "must look like key.sub=value"),
        (["name=a", "steps=1", "steps.x=1"], "is a value, not a section"),
    ],
)
def test_bad_config_names_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, overrides)


def test_dataclass_checks_become_config_errors() -> None:
    with pytest.raises(ConfigError, match="policy_period_s"):
        load_config(SceneConfig, None, ["policy_period_s=5"])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(Outer, write(tmp_path, "- a\n- b\n"))
    # a blank file (or comments only) is refused: it would run every default without a word
    for blank in ("", "\n\n", "# all defaults?\n"):
        with pytest.raises(ConfigError, match="holds no settings"):
            load_config(Outer, write(tmp_path, blank))
    # said explicitly: no settings from the file, the overrides and defaults as without one
    explicit = load_config(Outer, write(tmp_path, "{}\n"), ["name=x"])
    assert (explicit.name, explicit.mode, explicit.steps) == ("x", "sim", 5)


def test_a_bare_off_in_yaml_reaches_a_literal_that_allows_it(tmp_path: Path) -> None:
    """YAML 1.1 reads `off` as False: a Literal that allows "off" gets the word back, from a file
    and from --set; a Literal without it still refuses the boolean."""
    from robot_rl.runtime.train import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  feature_cache: off\n")
    assert load_config(TrainConfig, path, []).agent.feature_cache == "off"
    assert load_config(TrainConfig, None, ["agent.feature_cache=off"]).agent.feature_cache == "off"
    with pytest.raises(ConfigError, match=r"agent\.encoder=False"):
        load_config(TrainConfig, None, ["agent.encoder=off"])
