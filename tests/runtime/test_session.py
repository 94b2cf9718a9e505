"""`robot-rl session start`: every part of a sim session comes up healthy (robot server, learner,
actor with the console), the session runs, and everything stops cleanly with a checkpoint and the
episodes on disk; a part that fails to start is named, with its log."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robot_rl import cli
from tests.netutil import free_port

pytestmark = pytest.mark.timeout(300)
REACH = Path(__file__).parents[2] / "robot_rl" / "configs" / "reach_state.yaml"


def session_file(tmp_path: Path, **extra: object) -> Path:
    commands, state = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cameras = f"tcp://127.0.0.1:{free_port()}"
    config = {
        "train": str(REACH), "plaintext": True, "robot_server_task": "reach",
        "transitions": f"tcp://127.0.0.1:{free_port()}",
        "weights": f"tcp://127.0.0.1:{free_port()}",
        "robot_commands": commands, "robot_state": state, "health_timeout_s": 90,
        "camera_processes": [f"mirror-twin --task reach --plaintext --size 64 --commands "
                             f"{commands} --state {state} --endpoint {cameras}"],
        "set": [f"run_dir={tmp_path / 'runs'}", "name=s", "demos=2", "console.enabled=true",
                "console.port=0", "interventions=false", "env.remote.plaintext=true",
                f"env.remote.commands={commands}", f"env.remote.state={state}",
                f"env.remote.camera_endpoints=[{cameras}]"],
        **extra,
    }  # fmt: skip
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_sim_session_starts_runs_and_stops_cleanly(tmp_path: Path, capsys) -> None:
    assert cli.main(["session", "start", str(session_file(tmp_path)), "--duration", "8"]) == 0
    out = capsys.readouterr().out
    assert "operator console at http://127.0.0.1:" in out and "all parts are up" in out
    # Each part stopped on SIGINT, in reverse order.
    assert "{'actor': 0, 'learner': 0, 'cameras-0': 0, 'robot-server': 0}" in out
    run = tmp_path / "runs" / "s"
    assert (run / "checkpoints" / "latest.pt").is_file()  # the learner saved on the way out
    assert list((run / "episodes").glob("episode_*.npz"))  # the actor's steps reached the disk
    assert "targets" in (run / "session" / "robot-server.log").read_text()
    published = (run / "session" / "cameras-0.log").read_text()
    assert "published" in published and "published 0 frames" not in published


def test_a_part_that_fails_to_start_is_named_with_its_log(tmp_path: Path, capsys) -> None:
    path = session_file(tmp_path, robot_server_task="juggle")
    assert cli.main(["session", "start", str(path)]) == 1
    out = capsys.readouterr().out
    assert "robot-server exited with code 2" in out and "juggle" in out


def test_a_bad_session_key_is_a_usage_error(tmp_path: Path, caplog) -> None:
    path = session_file(tmp_path, warp_drive=True)
    assert cli.main(["session", "start", str(path)]) == 2
    assert "warp_drive" in caplog.text


def test_the_shipped_session_configs_load() -> None:
    from robot_rl.config import ConfigError
    from robot_rl.runtime.session import load_session

    configs = Path(__file__).parents[2] / "robot_rl" / "configs"
    sim = load_session(configs / "session_reach_sim.yaml")
    assert sim.config.robot_server_task == "reach" and sim.train.env.remote is not None
    pixels = load_session(configs / "session_pick_cube_pixels_sim.yaml")
    assert pixels.train.console.enabled and pixels.train.env.obs == "pixels"
    with pytest.raises(ConfigError, match="placeholder"):  # the real example must be edited
        load_session(configs / "session_real_example.yaml")
    real = load_session(configs / "session_real_example.yaml", ["set=[console.token=" + "k" * 24
                        + ", env.remote.commands=tcp://10.0.0.2:5560]"])  # fmt: skip
    assert real.train.console.token == "k" * 24
