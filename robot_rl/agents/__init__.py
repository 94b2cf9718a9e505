"""SAC/RLPD agent: encoders, actor, critic ensemble, hybrid gripper critic."""
