"""RLPD 50/50 mixing and HIL-SERL routing of intervention steps into the demo buffer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.data.mixing import route, sample_mixed
from robot_rl.data.replay import ReplayBuffer
from tests.data.fakes import episode, ids


def filled(first_episode: int, reward: float, n_episodes: int = 2) -> ReplayBuffer:
    buf = ReplayBuffer(1000)
    for e in range(first_episode, first_episode + n_episodes):
        for t in episode(e, 5, rewards=[reward] * 5):
            buf.add(t)
    return buf


@pytest.mark.parametrize("batch_size, n_demo", [(64, 32), (65, 32), (2, 1), (1, 0)])
def test_half_of_each_batch_comes_from_the_demos(batch_size: int, n_demo: int):
    demo, online = filled(0, reward=1.0), filled(100, reward=0.0)
    b = sample_mixed(demo, online, batch_size)
    assert b.size == batch_size
    expected = torch.tensor([1.0] * n_demo + [0.0] * (batch_size - n_demo))
    assert torch.equal(b.rewards, expected)  # demo samples first, then online
    from_demo = [e < 100 for e, _ in ids(b.obs["state"])]
    assert from_demo == [True] * n_demo + [False] * (batch_size - n_demo)


@pytest.mark.parametrize("minibatches", [2, 4])
def test_each_minibatch_is_mixed_half_and_half(minibatches: int):
    demo, online = filled(0, reward=1.0), filled(100, reward=0.0)
    b = sample_mixed(demo, online, 64, minibatches=minibatches)
    assert b.size == 64
    for piece in b.rewards.tensor_split(minibatches):
        assert piece.sum().item() == len(piece) / 2  # demo rewards are 1, online 0
    with pytest.raises(ValueError, match="minibatches=3"):
        sample_mixed(demo, online, 64, minibatches=3)


def test_an_empty_side_gives_its_half_to_the_other():
    demo, online, empty = filled(0, 1.0), filled(100, 0.0), ReplayBuffer(10)
    assert torch.all(sample_mixed(demo, empty, 16).rewards == 1.0)
    assert torch.all(sample_mixed(empty, online, 16).rewards == 0.0)
    with pytest.raises(ValueError, match="both empty"):
        sample_mixed(empty, ReplayBuffer(10), 16)
    with pytest.raises(ValueError, match="batch_size=0"):
        sample_mixed(demo, online, 0)


def test_buffers_with_different_observations_cannot_be_mixed():
    demo = ReplayBuffer(10)
    for t in episode(0, 2, cams=("front", "wrist")):
        demo.add(t)
    with pytest.raises(ValueError, match="different observations"):
        sample_mixed(demo, filled(100, 0.0), 8)


def test_route_sends_every_step_online_and_interventions_to_both_as_segments():
    # Steps 0..7, operator drives 1-2 and 5-7; step 7 terminates. gamma 0.5, n 2.
    pattern = [False, True, True, False, False, True, True, True]
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    demo, online = ReplayBuffer(100, 0.5, 2), ReplayBuffer(100, 0.5, 2)
    for t in episode(0, 8, "terminated", rewards=rewards, intervened=pattern):
        route(t, demo, online)
    # the next episode starts with an intervention: a fresh segment, no continuity error
    for t in episode(1, 2, "truncated", rewards=[9.0, 10.0], intervened=[True, True]):
        route(t, demo, online)

    assert (len(online), online.num_episodes) == (10, 2)
    assert (len(demo), demo.num_episodes) == (7, 3)  # segments 1-2, 5-7, episode 1
    b = demo.sample(512)
    assert bool(b.intervened.all())
    got = {}
    for i, key in enumerate(ids(b.obs["state"])):
        got[key] = (float(b.rewards[i]), float(b.discounts[i]), ids(b.next_obs["state"])[i])
    expected = {
        (0, 1): (2 + 0.5 * 3, 0.25, (0, 3)),  # 2-step window inside the segment
        (0, 2): (3.0, 0.5, (0, 3)),  # segment end: not terminal, bootstraps from step 3's obs
        (0, 5): (6 + 0.5 * 7, 0.25, (0, 7)),
        (0, 6): (7 + 0.5 * 8, 0.0, (0, 8)),  # window reaches the terminal step 7
        (0, 7): (8.0, 0.0, (0, 8)),
        (1, 0): (9 + 0.5 * 10, 0.25, (1, 2)),
        (1, 1): (10.0, 0.5, (1, 2)),  # time limit: bootstrap from the final frame
    }
    assert got.keys() == expected.keys()
    for key, (reward, discount, nxt) in expected.items():
        assert got[key][0] == pytest.approx(reward), key
        assert got[key][1] == pytest.approx(discount), key
        assert got[key][2] == nxt, key


def test_route_keeps_the_segment_frames_exact():
    demo, online = ReplayBuffer(100), ReplayBuffer(100)
    steps = episode(0, 4, "truncated", intervened=[True, False, True, True], cams=("a", "b"))
    for t in steps:
        route(t, demo, online)
    b = demo.sample(64)
    for i, (_, s) in enumerate(ids(b.obs["state"])):
        for cam in ("a", "b"):
            np.testing.assert_array_equal(b.obs[cam][i].numpy(), steps[s].obs[cam])
            np.testing.assert_array_equal(b.next_obs[cam][i].numpy(), steps[s].next_obs[cam])
