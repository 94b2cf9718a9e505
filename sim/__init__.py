"""PyBullet twin of a Franka Panda: the arm at torque level, task scenes, cameras, experts."""
