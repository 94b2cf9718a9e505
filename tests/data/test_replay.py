"""ReplayBuffer: shared frames, exact episode ends, n-step targets, eviction, memory, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from robot_rl.data.batch import Transition
from robot_rl.data.replay import ReplayBuffer, bytes_per_transition
from tests.data.fakes import ACTION_DIM, episode, frame, ids, pixel


def fill(buf: ReplayBuffer, *episodes: list[Transition]) -> ReplayBuffer:
    for steps in episodes:
        for t in steps:
            buf.add(t)
    return buf


def by_id(buf: ReplayBuffer, n: int = 512) -> dict[tuple[int, int], dict[str, object]]:
    """Sample ``n`` and index each sample by the (episode, step) of its obs."""
    b = buf.sample(n)
    out = {}
    for i, key in enumerate(ids(b.obs["state"])):
        out[key] = {
            "next": ids(b.next_obs["state"][i : i + 1])[0],
            "reward": float(b.rewards[i]),
            "discount": float(b.discounts[i]),
            "next_pixel": int(b.next_obs["front"][i, 0, 0, 0]),
            "obs_pixel": int(b.obs["front"][i, 0, 0, 0]),
            "penalty": float(b.gripper_penalties[i]),
            "intervened": bool(b.intervened[i]),
            "action": b.actions[i].numpy(),
        }
    return out


# -- shapes, dtypes, frames ------------------------------------------------------------------------


def test_sample_dtypes_and_shapes():
    cams = ("front", "wrist")
    buf = fill(ReplayBuffer(100), episode(0, 5, cams=cams, hw=(6, 8)))
    b = buf.sample(7)
    assert b.size == 7
    assert sorted(b.obs) == sorted(b.next_obs) == ["front", "state", "wrist"]
    for obs in (b.obs, b.next_obs):
        for cam in cams:
            assert obs[cam].dtype == torch.uint8 and obs[cam].shape == (7, 6, 8, 3)
            assert obs[cam].device.type == "cpu"
        assert obs["state"].dtype == torch.float32 and obs["state"].shape == (7, 3)
    assert b.actions.dtype == torch.float32 and b.actions.shape == (7, ACTION_DIM)
    for x in (b.rewards, b.discounts, b.gripper_penalties):
        assert x.dtype == torch.float32 and x.shape == (7,)
    assert b.intervened.dtype == torch.bool and b.intervened.shape == (7,)


def test_pin_memory_and_device_give_the_same_samples():
    a = fill(ReplayBuffer(100, seed=3), episode(0, 5))
    b = fill(ReplayBuffer(100, seed=3), episode(0, 5))
    plain = a.sample(8)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pinned = b.sample(8, device=device, pin_memory=True)  # no CUDA: warns once, not pinned
    assert pinned.obs["front"].device.type == device
    assert torch.equal(pinned.obs["front"].cpu(), plain.obs["front"])
    assert torch.equal(pinned.rewards.cpu(), plain.rewards)


def test_obs_and_next_obs_frames_and_step_fields_match_the_step():
    buf = fill(ReplayBuffer(100), episode(0, 6), episode(1, 4, end="truncated"))
    seen = by_id(buf)
    assert len(seen) == 10  # 512 draws from 10 steps reach them all
    for (e, s), got in seen.items():
        assert got["next"] == (e, s + 1)
        assert got["obs_pixel"] == pixel(e, s) and got["next_pixel"] == pixel(e, s + 1)
        assert got["reward"] == s / 4 and got["penalty"] == s / 8
        np.testing.assert_array_equal(got["action"], np.array([e, s, -1.0], np.float32) / 100)
    # frames stored once: 6 + 1 and 4 + 1 frames, 10 steps
    assert buf.num_episodes == 2 and len(buf) == 10


def test_intervened_flag_is_stored_per_step():
    pattern = [False, True, True, False, True]
    buf = fill(ReplayBuffer(100), episode(0, 5, intervened=pattern))
    seen = by_id(buf)
    assert [seen[(0, s)]["intervened"] for s in range(5)] == pattern


# -- n-step targets --------------------------------------------------------------------------------


def test_n_step_targets_by_hand():
    # gamma 0.5, n 3. Episode 0: rewards 1, 2, 3, 4, terminated at step 3.
    # Episode 1: rewards 10, 20, truncated at step 1 (time limit: bootstrap, not terminal).
    buf = ReplayBuffer(100, gamma=0.5, n_step=3)
    fill(
        buf,
        episode(0, 4, "terminated", rewards=[1, 2, 3, 4]),
        episode(1, 2, "truncated", rewards=[10, 20]),
    )
    expected = {  # (episode, step): (n-step reward, discount, next_obs frame)
        (0, 0): (1 + 0.5 * 2 + 0.25 * 3, 0.125, (0, 3)),  # full window, no terminal in it
        (0, 1): (2 + 0.5 * 3 + 0.25 * 4, 0.0, (0, 4)),  # window reaches the terminal step 3
        (0, 2): (3 + 0.5 * 4, 0.0, (0, 4)),  # 2 steps left; must not run into episode 1
        (0, 3): (4.0, 0.0, (0, 4)),
        (1, 0): (10 + 0.5 * 20, 0.25, (1, 2)),  # stops at the time limit, bootstraps there
        (1, 1): (20.0, 0.5, (1, 2)),  # truncated: discount gamma^1, next_obs the final frame
    }
    seen = by_id(buf)
    assert set(seen) == set(expected)
    for key, (reward, discount, nxt) in expected.items():
        assert seen[key]["reward"] == pytest.approx(reward), key
        assert seen[key]["discount"] == pytest.approx(discount), key
        assert seen[key]["next"] == nxt, key
        assert seen[key]["next_pixel"] == pixel(*nxt), key


def test_open_episode_window_grows_as_steps_arrive():
    buf = ReplayBuffer(100, gamma=0.5, n_step=3)
    steps = episode(0, 4, end=None, rewards=[1, 1, 1, 1])
    fill(buf, steps[:2])
    first = by_id(buf)[(0, 0)]
    assert (first["reward"], first["discount"], first["next"]) == (1.5, 0.25, (0, 2))
    fill(buf, steps[2:])
    first = by_id(buf)[(0, 0)]
    assert (first["reward"], first["discount"], first["next"]) == (1.75, 0.125, (0, 3))


@pytest.mark.parametrize("end, discount", [("truncated", 0.9), ("terminated", 0.0)])
def test_next_obs_at_time_out_is_the_final_observation(end: str, discount: float):
    """The time-out bug: the last step's next_obs must be the env's final observation, not the
    next episode's reset frame, and a time limit keeps the bootstrap (discount gamma)."""
    cams = ("front", "wrist")
    buf = ReplayBuffer(100, gamma=0.9)
    fill(buf, episode(3, 3, end, cams=cams), episode(4, 2, cams=cams))  # 4 starts from a reset
    b = buf.sample(256)
    rows = [i for i, key in enumerate(ids(b.obs["state"])) if key == (3, 2)]
    assert rows, "the final step was never sampled"
    final = frame(3, 3, cams)
    for i in rows:
        np.testing.assert_array_equal(b.next_obs["state"][i].numpy(), final["state"])
        for cam in cams:
            np.testing.assert_array_equal(b.next_obs[cam][i].numpy(), final[cam])
        assert float(b.discounts[i]) == pytest.approx(discount)


# -- episode continuity ----------------------------------------------------------------------------


def test_obs_that_does_not_continue_the_open_episode_raises_and_stores_nothing():
    buf = fill(ReplayBuffer(100), episode(0, 5)[:3])  # open: last next_obs is frame (0, 3)
    stray = episode(1, 2)[0]  # a new episode's first step while 0 is unfinished
    before = (len(buf), buf.nbytes, buf.num_episodes)
    with pytest.raises(ValueError, match=r"does not continue the open episode"):
        buf.add(stray)
    assert (len(buf), buf.nbytes, buf.num_episodes) == before
    buf.close_episode()  # recovery after e.g. an actor restart
    buf.add(stray)
    assert buf.num_episodes == 2
    seen = by_id(buf)
    assert seen[(0, 2)]["next"] == (0, 3)  # the closed episode keeps its last next_obs
    assert seen[(0, 2)]["discount"] == pytest.approx(0.97)


def test_step_after_an_episode_end_starts_a_new_episode():
    buf = fill(ReplayBuffer(100), episode(0, 2, "truncated"), episode(0, 2, "terminated"))
    assert buf.num_episodes == 2 and not buf.episode_open


# -- capacity and memory ---------------------------------------------------------------------------


def test_capacity_evicts_oldest_steps_first():
    buf = fill(ReplayBuffer(10), episode(0, 6), episode(1, 6), episode(2, 6))
    # 18 steps, 10 kept: episode 0 and steps 0, 1 of episode 1 are gone
    assert len(buf) == 10 and buf.num_episodes == 2
    seen = by_id(buf, 1024)
    assert set(seen) == {(1, s) for s in range(2, 6)} | {(2, s) for s in range(6)}
    for (e, s), got in seen.items():
        assert got["obs_pixel"] == pixel(e, s) and got["next_pixel"] == pixel(e, s + 1)


def test_capacity_smaller_than_an_episode():
    buf = ReplayBuffer(3, n_step=2, gamma=0.5)
    fill(buf, episode(0, 10, end=None, rewards=[1.0] * 10))
    assert len(buf) == 3 and buf.num_episodes == 1 and buf.episode_open
    seen = by_id(buf)
    assert set(seen) == {(0, 7), (0, 8), (0, 9)}
    assert seen[(0, 7)]["next"] == (0, 9) and seen[(0, 7)]["discount"] == 0.25
    assert seen[(0, 9)]["next"] == (0, 10) and seen[(0, 9)]["discount"] == 0.5
    with pytest.raises(ValueError, match="does not continue"):
        buf.add(episode(0, 12)[11])


def test_memory_stays_bounded_under_eviction():
    cams = ("front", "wrist")
    buf = ReplayBuffer(200)
    fill(buf, *(episode(e, 20, cams=cams, hw=(64, 64)) for e in range(10)))
    full = buf.nbytes
    fill(buf, *(episode(e, 20, cams=cams, hw=(64, 64)) for e in range(10, 110)))
    assert len(buf) == 200 and buf.num_episodes == 10
    assert buf.nbytes <= 1.25 * full
    assert {e for e, _ in by_id(buf)} == set(range(100, 110))


def test_memory_grows_with_use_not_capacity():
    buf = fill(ReplayBuffer(1_000_000), episode(0, 1, cams=("a", "b"), hw=(128, 128)))
    assert buf.nbytes < 2 * 1024 * 1024  # far from 10^6 x 96 KiB


def test_bytes_per_transition_two_128_cameras():
    image_bytes = 2 * 128 * 128 * 3
    buf = ReplayBuffer(100_000)
    cams = ("front", "wrist")
    fill(buf, *(episode(e, 200, "truncated", cams=cams, hw=(128, 128)) for e in range(5)))
    per_step = bytes_per_transition(buf)
    assert image_bytes <= per_step <= 1.1 * image_bytes


def test_clear_empties_and_accepts_a_new_layout():
    buf = fill(ReplayBuffer(100), episode(0, 3))
    buf.clear()
    assert len(buf) == 0 and buf.nbytes == 0 and buf.num_episodes == 0
    fill(buf, episode(0, 3, cams=("a", "b"), hw=(2, 2)))
    assert sorted(buf.sample(2).obs) == ["a", "b", "state"]


def test_same_seed_same_batches():
    a = fill(ReplayBuffer(100, seed=7), episode(0, 9))
    b = fill(ReplayBuffer(100, seed=7), episode(0, 9))
    for _ in range(3):
        assert torch.equal(a.sample(16).obs["state"], b.sample(16).obs["state"])


# -- bad input -------------------------------------------------------------------------------------


def bad(field: str, value: object) -> Transition:
    t = episode(0, 2)[0]
    if field.startswith("obs.") or field.startswith("next_obs."):
        which, key = field.split(".")
        obs = dict(getattr(t, which))
        if value is None:
            del obs[key]
        else:
            obs[key] = value
        return dataclasses.replace(t, **{which: obs})
    return dataclasses.replace(t, **{field: value})


BAD_STEPS = {
    "image-float": (bad("obs.front", np.zeros((4, 4, 3), np.float32)), r"obs\['front'\].*uint8"),
    "image-shape": (bad("next_obs.front", np.zeros((4, 5, 3), np.uint8)), r"next_obs\['front'\]"),
    "missing-state": (bad("obs.state", None), r"state"),
    "extra-camera": (bad("next_obs.wrist", np.zeros((4, 4, 3), np.uint8)), r"next_obs has keys"),
    "state-shape": (bad("next_obs.state", np.zeros(4, np.float32)), r"next_obs\['state'\]"),
    "state-text": (bad("obs.state", np.array(["a", "b", "c"])), r"obs\['state'\].*dtype"),
    "action-shape": (bad("action", np.zeros(2, np.float32)), r"action has dtype"),
    "action-nan": (bad("action", np.array([0, np.nan, 0], np.float32)), r"action=.*not finite"),
    "reward-nan": (bad("reward", float("nan")), r"reward=nan is not finite"),
    "reward-text": (bad("reward", "high"), r"reward='high' is not a number"),
    "penalty-inf": (bad("gripper_penalty", float("inf")), r"gripper_penalty=inf"),
    "state-nan": (
        bad("obs.state", np.array([0, np.nan, 0.5], np.float32)),
        r"obs\['state'\]=.*not finite",
    ),
    "next-state-inf": (
        bad("next_obs.state", np.array([0, 1, np.inf], np.float32)),
        r"next_obs\['state'\]=.*not finite",
    ),
}


def test_a_nan_state_never_reaches_a_sample():
    buf = ReplayBuffer(100)
    steps = episode(0, 3, "terminated")
    buf.add(steps[0])
    poisoned = dataclasses.replace(
        steps[1], next_obs={**steps[1].next_obs, "state": np.full(3, np.nan, np.float32)}
    )
    with pytest.raises(ValueError, match="not finite"):
        buf.add(poisoned)
    buf.add(steps[1])
    buf.add(steps[2])
    batch = buf.sample(64)
    assert torch.isfinite(batch.obs["state"]).all()
    assert torch.isfinite(batch.next_obs["state"]).all()


@pytest.mark.parametrize("name", sorted(BAD_STEPS))
def test_bad_step_raises_naming_the_field(name: str):
    buf = fill(ReplayBuffer(100), episode(0, 2))  # spec known: "front" 4x4, state 3, action 3
    t, pattern = BAD_STEPS[name]
    with pytest.raises(ValueError, match=pattern):
        buf.add(t)
    assert len(buf) == 2


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(capacity=0), "capacity=0"),
        (dict(capacity=2.5), "capacity=2.5"),
        (dict(capacity=10, gamma=1.5), "gamma=1.5"),
        (dict(capacity=10, n_step=0), "n_step=0"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, pattern: str):
    with pytest.raises(ValueError, match=pattern):
        ReplayBuffer(**kwargs)


def test_sampling_an_empty_buffer_or_no_samples_raises():
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(10).sample(4)
    with pytest.raises(ValueError, match="batch size 0"):
        fill(ReplayBuffer(10), episode(0, 2)).sample(0)
    for bad_size in (-1, 2.5, True):
        with pytest.raises(ValueError, match="sample count"):
            fill(ReplayBuffer(10), episode(0, 2)).sample(bad_size)
    with pytest.raises(ValueError, match="empty"):
        bytes_per_transition(ReplayBuffer(10))
