"""Replay buffers, episodes on disk, demos."""
