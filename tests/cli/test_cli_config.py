"""The CLI's configs: one set of endpoint defaults, the distributed settings reachable from YAML and
``--net-set`` (flags winning), record's ``--config``, the cameras' ``--crop``, and the one camera
publishing loop. No sockets are opened: each case stops before a process would bind."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from robot_rl import cli
from robot_rl.cli.cameras import parse_crops
from robot_rl.cli.distributed import network_configs
from robot_rl.cli.errors import CliError
from robot_rl.console.server import ConsoleConfig
from robot_rl.endpoints import DEFAULT_ENDPOINTS
from robot_rl.interfaces import Frame
from robot_rl.transport.actor_link import ActorLinkConfig
from robot_rl.transport.camera_sources import publish_frames
from robot_rl.transport.learner_link import LinkEndpoints
from robot_rl.transport.robot_server import RobotEndpoints


def test_every_endpoint_default_comes_from_the_one_endpoints_config() -> None:
    assert LinkEndpoints() == LinkEndpoints("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
    link = ActorLinkConfig()
    assert LinkEndpoints(link.transitions_endpoint, link.weights_endpoint) == LinkEndpoints()
    assert RobotEndpoints() == RobotEndpoints("tcp://127.0.0.1:5560", "tcp://127.0.0.1:5561")
    assert (ConsoleConfig().host, ConsoleConfig().port) == ("127.0.0.1", 8765)
    parser = cli.build_parser()
    mirror = parser.parse_args(["cameras", "mirror-twin"])
    assert (mirror.commands, mirror.state) == tuple(vars(RobotEndpoints()).values())
    assert mirror.endpoint == DEFAULT_ENDPOINTS.cameras == "tcp://127.0.0.1:5570"
    # A camera host serves the learner's host.
    real = parser.parse_args(["cameras", "publish", "--camera", "front="])
    assert real.endpoint == "tcp://0.0.0.0:5570"


def _net(tmp_path: Path, argv: list[str]):
    args = cli.build_parser().parse_args(argv)
    return network_configs(args, "learner" if argv[0] == "learner" else args.actor_id,
                           None if argv[0] == "learner" else args.actor_id)  # fmt: skip


def test_distributed_config_comes_from_yaml_and_net_set_and_flags_win(tmp_path: Path) -> None:
    net_file = tmp_path / "net.yaml"
    net_file.write_text(
        "weights_period_s: 0.5\ncheckpoint_period_s: 60.0\n"
        "endpoints: {transitions: 'tcp://10.0.0.2:6000', weights: 'tcp://10.0.0.2:6001'}\n"
        "security: {keys_dir: site-keys, server_name: big-learner}\n"
    )
    argv = ["actor", "--net", str(net_file), "--net-set", "status_period_s=3"]
    _, net = _net(tmp_path, [*argv, "--weights", "tcp://10.0.0.9:7001", "--actor-id", "actor-3"])
    assert (net.weights_period_s, net.checkpoint_period_s, net.status_period_s) == (0.5, 60.0, 3.0)
    assert net.endpoints.transitions == "tcp://10.0.0.2:6000"  # from the file
    assert net.endpoints.weights == "tcp://10.0.0.9:7001"  # the flag wins over the file
    assert (net.security.keys_dir, net.security.server_name) == ("site-keys", "big-learner")
    assert (net.security.name, net.actor_id) == ("actor-3", "actor-3")  # key defaults to the id
    assert not net.security.plaintext


def test_distributed_defaults_without_files_match_the_endpoints(tmp_path: Path) -> None:
    _, net = _net(tmp_path, ["learner", "--plaintext"])
    assert net.endpoints == LinkEndpoints()
    assert (net.security.name, net.security.keys_dir, net.security.plaintext) == (
        "learner", "keys", True)  # fmt: skip


@pytest.mark.parametrize("override", ["weights_period_z=1", "endpoints.nope=tcp://x:1"])
def test_unknown_distributed_keys_are_usage_errors(tmp_path: Path, override: str, caplog) -> None:
    with pytest.raises(CliError, match=override.split("=")[0].split(".")[-1]):
        _net(tmp_path, ["learner", "--net-set", override])
    assert cli.main(["learner", "--net-set", override, "--plaintext"]) == 2


def test_record_needs_a_task_or_a_config(caplog) -> None:
    assert cli.main(["record", "--episodes", "1"]) == 2
    assert "--task NAME or --config FILE" in caplog.text


def test_record_refuses_the_scripted_expert_on_a_robot(tmp_path: Path, caplog) -> None:
    config = tmp_path / "robot.yaml"
    config.write_text("env: {task: reach, obs: state, remote: {commands: 'tcp://127.0.0.1:1'}}\n")
    assert cli.main(["record", "--config", str(config), "--episodes", "1"]) == 2
    assert "drives only the twin" in caplog.text


def test_record_reports_a_bad_config_file(tmp_path: Path, caplog) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("env: {task: reach, wheels: 4}\n")
    assert cli.main(["record", "--config", str(config), "--teleop", "console"]) == 2
    assert "wheels" in caplog.text


def test_crops_parse_per_camera_and_refuse_malformed_boxes() -> None:
    assert parse_crops(["front=80,0,480,480"], ["front", "wrist"]) == {"front": (80, 0, 480, 480)}
    for bad in ("side=1,2,3,4", "front=1,2,3", "front=a,b,c,d", "front"):
        with pytest.raises(CliError, match="ID=X,Y,W,H"):
            parse_crops([bad], ["front", "wrist"])


def test_a_crop_that_does_not_fit_the_image_is_a_usage_error(caplog) -> None:
    argv = ["cameras", "publish", "--camera", "front=", "--crop", "front=400,0,480,480"]
    assert cli.main(argv) == 2  # refused by RealSenseConfig before any camera is opened
    assert "does not fit a 640x480" in caplog.text


class _Publisher:
    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def publish(self, frame: Frame) -> None:
        self.frames.append(frame)


class _Source:
    """Two frames a round; sets ``stop`` after ``rounds`` rounds; a round may give no frames."""

    def __init__(self, rounds: int, stop: threading.Event) -> None:
        self.rounds, self.stop, self.calls = rounds, stop, 0

    def next_frames(self) -> list[Frame]:
        self.calls += 1
        if self.calls == self.rounds:
            self.stop.set()
        if self.calls == 2:
            return []  # e.g. no robot state yet
        image = np.zeros((2, 2, 3), np.uint8)
        return [Frame(image, 0.0, self.calls, "front"), Frame(image, 0.0, self.calls, "wrist")]

    def close(self) -> None:
        pass


def test_publish_frames_forwards_every_round_in_order_until_stopped() -> None:
    stop = threading.Event()
    publisher, source = _Publisher(), _Source(4, stop)
    assert publish_frames(publisher, source, stop=stop) == 6  # rounds 1, 3 and 4 give 2 each
    sent = [(f.seq, f.camera_id) for f in publisher.frames]
    assert sent == [(seq, cam) for seq in (1, 3, 4) for cam in ("front", "wrist")]
    assert source.calls == 4


def test_publish_frames_stops_at_the_duration() -> None:
    stop = threading.Event()
    source = _Source(10**9, stop)
    assert publish_frames(_Publisher(), source, duration_s=0.0, stop=stop) == 0
    assert source.calls == 0


def test_the_console_hub_settings_are_reachable_from_set() -> None:
    from robot_rl.config import load_config
    from robot_rl.runtime.train import TrainConfig

    config = load_config(TrainConfig, None, ["console.hub.max_fps=5", "console.hub.history=50"])
    assert (config.console.hub.max_fps, config.console.hub.history) == (5.0, 50)
    assert config.console.hub.jpeg_quality == 80  # untouched fields keep their defaults


def test_robot_server_wait_returns_at_the_duration_on_an_error_or_a_stop() -> None:
    """``RobotServer.wait`` (what ``robot-rl robot-server`` blocks in) ends for each reason."""
    import time
    from types import SimpleNamespace

    from robot_rl.transport.robot_server import RobotServer

    server = SimpleNamespace(error=None, _stop=threading.Event())
    start = time.monotonic()
    RobotServer.wait(server, duration_s=0.05, poll_s=0.01)
    assert time.monotonic() - start >= 0.05
    server.error = RuntimeError("tick failed")
    RobotServer.wait(server, duration_s=None)  # returns at once: the loop has failed
    server.error = None
    server._stop.set()
    RobotServer.wait(server, duration_s=None)  # returns at once: stopped


def test_record_takes_env_teleop_and_console_settings_from_the_config(tmp_path: Path) -> None:
    from robot_rl.cli.record import operator_configs, session_config

    config = tmp_path / "train.yaml"
    config.write_text("env: {task: pick_cube, obs: state}\nteleop: {deadzone: 0.3, select: '2'}\n"
                      "console: {port: 9000}\n")  # fmt: skip
    argv = ["record", "--config", str(config), "--set", "teleop.max_linear_m_s=0.05",
            "--teleop", "spacemouse", "--obs", "pixels"]  # fmt: skip
    args = cli.build_parser().parse_args(argv)
    train = session_config(args, task=args.task, obs=args.obs)
    assert (train.env.task, train.env.obs) == ("pick_cube", "pixels")  # the flag wins over the file
    teleop, page = operator_configs(train, args, console=False)
    assert (teleop.device, teleop.deadzone, teleop.select, teleop.max_linear_m_s) == (
        "spacemouse", 0.3, "2", 0.05)  # fmt: skip
    assert (page.enabled, page.port) == (False, 9000)
    args = cli.build_parser().parse_args([*argv, "--select", "0", "--console-port", "9100"])
    teleop, page = operator_configs(train, args, console=True)
    assert (teleop.select, page.enabled, page.port) == ("0", True, 9100)


def test_the_actor_link_and_the_intervener_are_reachable_from_set(tmp_path: Path) -> None:
    argv = ["actor", "--net-set", "actor_link.batch_steps=4", "--net-set",
            "actor_link.resend_after_s=0.5", "--set", "intervener.patience=7"]  # fmt: skip
    train, net = _net(tmp_path, argv)
    assert (net.actor_link.batch_steps, net.actor_link.resend_after_s) == (4, 0.5)
    assert net.actor_link.max_in_flight == ActorLinkConfig().max_in_flight  # the rest: defaults
    assert (train.intervener.patience, train.intervener.takeover_steps) == (7, 5)
