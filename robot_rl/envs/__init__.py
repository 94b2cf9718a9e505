"""Gymnasium environments over a robot (the twin or a real arm) with cameras and a reward."""
