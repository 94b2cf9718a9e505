"""PyBullet twin of a Franka Panda: the arm at the torque level, task scenes, cameras, scripted experts."""
