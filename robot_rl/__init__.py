"""robot-rl: human-in-the-loop, sample-efficient RL for robot arms (see ARCHITECTURE in shared/)."""

__version__ = "0.1.0"
