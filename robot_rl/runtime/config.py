"""The training config (``robot-rl train --config``, and what ``robot-rl learner`` / ``actor``
read): one frozen dataclass, loaded from YAML with ``--set`` overrides (``robot_rl.config``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from robot_rl.agents.config import SACConfig
from robot_rl.console.server import ConsoleConfig
from robot_rl.envs.intervention import ScriptedIntervenerConfig
from robot_rl.envs.twin_env import TwinEnvConfig
from robot_rl.runtime.metrics import LOGGERS
from robot_rl.teleop_command import TeleopConfig


@dataclass(frozen=True)
class TrainConfig:
    """One training session (the env config names the task and the observation mode)."""

    env: TwinEnvConfig = field(default_factory=TwinEnvConfig)
    agent: SACConfig = field(default_factory=SACConfig)
    seed: int = 0
    env_steps: int = 20_000
    demos: int = 20  # scripted-expert demos recorded into the run before training (0: none)
    interventions: bool = True  # the scripted intervener stands in for the operator
    intervener: ScriptedIntervenerConfig = field(default_factory=ScriptedIntervenerConfig)
    learning_starts: int = 100  # online steps before the first update
    # SAC updates on the demo buffer alone before the first env step (agents/warm_start.py).
    demo_pretrain_updates: int = 0
    batch_size: int = 256
    replay_capacity: int = 200_000
    n_step: int = 1
    concurrent: bool = True  # learner in its own thread; False: update between env steps
    utd_slack: int = 20  # updates the learner may lag before the actor waits
    policy_sync_every: int = 10  # learner updates between actor policy snapshots
    eval_every: int = 2_000  # env steps between deterministic evaluations (0: only at the end)
    eval_episodes: int = 10
    checkpoint_every: int = 2_000  # env steps between checkpoints (0: by time and at the end)
    checkpoint_every_min: float = 10.0  # minutes between checkpoints (0: by steps and at the end)
    logger: str = "tensorboard"  # where metrics go: tensorboard (run/tb) or wandb
    run_dir: str = "runs"
    name: str = ""  # default: <task>-<obs>-<seed>
    console: ConsoleConfig = field(default_factory=ConsoleConfig)  # the operator's web page
    # The operator's device: "console" (the page's keys and gamepad), spacemouse, gamepad.
    teleop: TeleopConfig = field(default_factory=lambda: TeleopConfig(device="console"))

    def __post_init__(self) -> None:
        for name in ("env_steps", "batch_size", "replay_capacity", "n_step", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; must be >= 1")
        if self.demos < 0 or self.learning_starts < 0 or self.checkpoint_every_min < 0:
            raise ValueError("demos, learning_starts and checkpoint_every_min must be >= 0")
        if self.demo_pretrain_updates < 0:
            raise ValueError(f"demo_pretrain_updates={self.demo_pretrain_updates}; must be >= 0")
        if self.env.id and (self.demos or self.interventions):
            raise ValueError(
                f"env.id={self.env.id!r} is not the twin: scripted demos and the "
                "scripted intervener need it; set demos: 0 and interventions: false"
            )
        if self.logger not in LOGGERS:
            raise ValueError(f"logger {self.logger!r}; allowed: {', '.join(LOGGERS)}")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.env.task}-{self.env.obs}-{self.seed}"

    @property
    def run_path(self) -> Path:
        """The run's directory: ``run_dir/run_name``."""
        return Path(self.run_dir) / self.run_name
