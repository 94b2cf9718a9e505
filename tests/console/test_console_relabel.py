"""Undoing a mark the actor already applied relabels the stored episode: the episode file on the
learner's disk (rewritten atomically, its label history kept in meta), the replay's copy, and the
whole in-process path from the console's undo to both."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from robot_rl.console.bridge import AppliedMark, ConsoleBridge
from robot_rl.console.hub import ConsoleHub
from robot_rl.data.batch import Transition
from robot_rl.data.episode_labels import StepFlags, StepRelabel, relabel_episode_file
from robot_rl.data.episodes import EpisodeFormatError, load_episode, load_episodes, save_episode
from robot_rl.data.replay import ReplayBuffer
from robot_rl.envs.twin_env import TwinEnv, TwinEnvConfig
from robot_rl.runtime.actor import ActorLoop, LinkRecorder
from robot_rl.runtime.episode_tally import EpisodeTally
from robot_rl.runtime.learner import ReplaySink
from robot_rl.transport.episode_store import EpisodeStore
from robot_rl.transport.inprocess import InProcessTransport

pytestmark = pytest.mark.timeout(120)

SUCCESS_MARK = StepFlags(1.0, True, False)  # what a success mark makes of a step
ENV_SAID = StepFlags(0.0, False, False)  # the env's own flags for that step
RESTORED = StepFlags(0.0, False, True)  # the episode stays ended, now by truncation


def steps(n: int, last: StepFlags, seed: int = 0) -> list[Transition]:
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(n + 1, 4)).astype(np.float32)
    out = []
    for i in range(n):
        end = i == n - 1
        out.append(Transition(
            {"state": states[i]}, rng.uniform(-1, 1, 2).astype(np.float32),
            last.reward if end else 0.0, {"state": states[i + 1]},
            last.terminated and end, last.truncated and end, False, 0.0,
        ))  # fmt: skip
    return out


def relabel_of(episode: list[Transition], actor: str = "actor-0", seq: int = 4) -> StepRelabel:
    last = episode[-1]
    return StepRelabel(actor, seq, "success", SUCCESS_MARK, RESTORED, last.action,
                       last.next_obs["state"])  # fmt: skip


def test_a_relabelled_file_keeps_every_other_array_and_the_label_history(tmp_path: Path) -> None:
    episode = steps(5, SUCCESS_MARK)
    path = save_episode(tmp_path, episode, {"task": "reach", "actor_id": "actor-0",
                                            "last_seq": 4})  # fmt: skip
    before, before_meta = load_episode(path)
    assert relabel_episode_file(path, relabel_of(episode))
    after, meta = load_episode(path)
    last = after[-1]
    assert (last.reward, last.terminated, last.truncated) == (0.0, False, True)
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old.action, new.action)
        np.testing.assert_array_equal(old.obs["state"], new.obs["state"])
    assert [t.reward for t in after[:-1]] == [0.0] * 4
    (entry,) = meta["label_history"]
    assert entry["undone"] == "success" and entry["marked"] == SUCCESS_MARK.as_dict()
    assert entry["restored"] == RESTORED.as_dict() and meta["operator_label"] is None
    assert entry["last_seq"] == 4
    assert meta["created_utc"] == before_meta["created_utc"]  # the same episode
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    # The same relabel again (a resend) is recognised: nothing written, no second entry.
    relabelled = path.read_bytes()
    assert not relabel_episode_file(path, relabel_of(episode))
    assert path.read_bytes() == relabelled
    # Another relabel of that step is refused: the step is not what its mark made of it.
    with pytest.raises(ValueError, match="not the marked"):
        relabel_episode_file(path, dataclasses.replace(relabel_of(episode), last_seq=9))
    ended_by_env = dataclasses.replace(relabel_of(episode), restored=StepFlags(0.0, True, False))
    with pytest.raises(ValueError, match="not the marked"):
        relabel_episode_file(path, ended_by_env)
    assert len(load_episode(path)[1]["label_history"]) == 1


def test_a_failure_mark_whose_flags_stay_is_recorded_once(tmp_path: Path) -> None:
    # A failure mark on a step the env left open: withdrawing it keeps the episode truncated with
    # reward 0, the same flags, so only the history tells a resend from a first application.
    failure = StepFlags(0.0, False, True)
    episode = steps(3, failure)
    path = save_episode(tmp_path, episode, {"task": "reach", "actor_id": "actor-0",
                                            "last_seq": 2})  # fmt: skip
    relabel = StepRelabel("actor-0", 2, "failure", failure, failure, episode[-1].action,
                          episode[-1].next_obs["state"])  # fmt: skip
    assert relabel_episode_file(path, relabel)
    assert not relabel_episode_file(path, relabel)
    assert [e["undone"] for e in load_episode(path)[1]["label_history"]] == ["failure"]


def test_a_hostile_file_is_not_relabelled(tmp_path: Path) -> None:
    path = tmp_path / "episode_000000.npz"
    path.write_bytes(b"PK\x03\x04 not an archive")
    with pytest.raises(EpisodeFormatError):
        relabel_episode_file(path, relabel_of(steps(2, SUCCESS_MARK)))
    assert path.read_bytes() == b"PK\x03\x04 not an archive"


def test_a_relabel_with_bad_fields_is_refused() -> None:
    episode = steps(2, SUCCESS_MARK)
    good = relabel_of(episode)
    with pytest.raises(ValueError, match="undone"):
        StepRelabel("a", 1, "maybe", SUCCESS_MARK, RESTORED, good.action, good.next_state)
    with pytest.raises(ValueError, match="last_seq"):
        StepRelabel("a", -1, "success", SUCCESS_MARK, RESTORED, good.action, good.next_state)
    with pytest.raises(ValueError, match="not finite"):
        StepRelabel("a", 1, "success", StepFlags(float("nan"), True, False), RESTORED,
                    good.action, good.next_state)  # fmt: skip
    with pytest.raises(ValueError, match="both terminated and truncated"):
        StepRelabel("a", 1, "success", SUCCESS_MARK, StepFlags(0.0, True, True), good.action,
                    good.next_state)  # fmt: skip
    assert StepRelabel.from_meta(good.to_meta()).last_seq == good.last_seq  # round trip
    meta = good.to_meta()
    not_a_flag = {**RESTORED.as_dict(), "truncated": "yes"}
    for broken in ({**meta, "action": [float("inf")]}, {**meta, "marked": {"reward": 1}},
                   {**meta, "actor_id": ""}, {**meta, "restored": not_a_flag}):  # fmt: skip
        with pytest.raises(ValueError):
            StepRelabel.from_meta(broken)


def test_the_store_finds_the_episode_by_actor_and_seq_also_after_a_restart(tmp_path: Path) -> None:
    first, second = steps(3, SUCCESS_MARK, seed=1), steps(5, SUCCESS_MARK, seed=2)
    store = EpisodeStore(tmp_path, "reach")
    for seq, step in enumerate(first + second):
        store.add("actor-0", seq, step, starts_episode=seq in (0, 3))
    assert store.relabel(relabel_of(second, seq=7))  # the recent index
    restarted = EpisodeStore(tmp_path, "reach")
    restarted.restore()
    assert restarted.relabel(relabel_of(first, seq=2))  # found by reading the files' meta
    assert not restarted.relabel(relabel_of(second, seq=7))  # a resend after a restart
    with pytest.raises(LookupError, match="no stored episode of actor-0 ends at seq 5"):
        restarted.relabel(relabel_of(first, seq=5))
    episodes = list(load_episodes(tmp_path))
    assert [e.transitions[-1].truncated for e in episodes] == [True, True]
    assert [e.transitions[-1].reward for e in episodes] == [0.0, 0.0]
    assert store.relabelled == restarted.relabelled == 1 and restarted.repeated_relabels == 1
    assert [len(e.meta["label_history"]) for e in episodes] == [1, 1]


def test_the_replay_copy_is_relabelled_and_its_targets_follow() -> None:
    episode = steps(1, SUCCESS_MARK)
    buffer = ReplayBuffer(10, gamma=0.5)
    buffer.add(episode[0])
    batch = buffer.sample(4)
    assert batch.rewards.tolist() == [1.0] * 4 and batch.discounts.tolist() == [0.0] * 4
    other = np.zeros(4, np.float32)
    assert not buffer.relabel_step(episode[0].action, other, 0.0, False)  # not held: no change
    assert buffer.relabel_step(episode[0].action, episode[0].next_obs["state"], 0.0, False)
    batch = buffer.sample(4)
    assert batch.rewards.tolist() == [0.0] * 4 and batch.discounts.tolist() == [0.5] * 4
    with pytest.raises(ValueError, match="not finite"):
        buffer.relabel_step(episode[0].action, episode[0].next_obs["state"], float("nan"), False)


def test_undoing_an_applied_success_mark_relabels_disk_and_replay_in_process(
    tmp_path: Path,
) -> None:
    env = TwinEnv(TwinEnvConfig(task="reach", obs="state", max_episode_steps=50))
    hub = ConsoleHub()
    bridge = ConsoleBridge(hub, env)
    transport = InProcessTransport()
    demo, online = ReplayBuffer(1000), ReplayBuffer(1000)
    sink = ReplaySink(demo, online, threading.Lock())
    learner = transport.learner(tmp_path, sink, "reach")
    learner.on_relabel = sink.relabel
    actor = transport.actor("actor-0")
    bridge.last_seq = lambda: actor.next_seq - 1
    bridge.on_undo_mark = lambda mark: actor.relabel(mark.relabel("actor-0"))
    rest = np.zeros(env.action_space.shape, np.float32)
    loop = ActorLoop(env, lambda obs: rest, LinkRecorder(actor), bridge=bridge)
    try:
        loop.run(max_steps=2)
        hub.control("mark_success")
        loop.run(max_steps=1)  # the third step carries the mark and ends the episode
        learner.poll()
        (stored,) = list(load_episodes(tmp_path))
        assert len(stored.transitions) == 3 and stored.transitions[-1].reward == 1.0
        assert stored.transitions[-1].terminated and online.sample(8).rewards.max() == 1.0
        hub.control("undo_mark")
        loop.run(max_steps=1)  # the undo is applied before the next episode's first step
        learner.poll()
    finally:
        env.close()
    assert bridge.undone == [(0, "success")] and learner.relabels_failed == 0
    episodes = list(load_episodes(tmp_path))
    last = episodes[0].transitions[-1]
    assert (last.reward, last.terminated, last.truncated) == (0.0, False, True)
    assert episodes[0].meta["label_history"][0]["undone"] == "success"
    assert online.sample(64).rewards.max() == 0.0  # no sampled step still says success


def test_a_relabel_reaches_a_distributed_learner_once_the_step_is_durable(tmp_path: Path) -> None:
    from robot_rl.transport.actor_link import ActorLink
    from tests.transport.test_links import (
        PLAIN,
        Sink,
        actor_config,
        episode_steps,
        free_endpoints,
        run_until,
        start_learner,
    )

    ep, store = free_endpoints(), tmp_path / "store"
    learner = start_learner(ep, store, Sink())
    seen: list[StepRelabel] = []
    learner.on_relabel = seen.append
    actor = ActorLink(actor_config(ep, tmp_path / "spool"), PLAIN)
    try:
        episode = episode_steps(0, 5)  # the last step terminal with reward 1: a success mark
        for step in episode:
            actor.add(step)
        last = episode[-1]
        relabel = StepRelabel("a0", actor.last_step_seq, "success", SUCCESS_MARK, RESTORED,
                              last.action, last.next_obs["state"])  # fmt: skip
        assert relabel.last_seq == 4
        actor.relabel(relabel)  # before the learner has the step: held until it is durable
        assert actor.relabels_pending == 1
        run_until(learner, actor, lambda: actor.relabels_pending == 0)
        assert actor.relabels_done == 1 and [r.last_seq for r in seen] == [4]
        (stored_episode,) = list(load_episodes(store))
        final = stored_episode.transitions[-1]
        assert (final.reward, final.terminated, final.truncated) == (0.0, False, True)
        assert stored_episode.meta["label_history"][0]["undone"] == "success"
        # what an actor may not ask: another actor's episode, or a malformed relabel
        error, extra = learner._relabel("a0", {**relabel.to_meta(), "actor_id": "b1"})
        assert "relabels its own episodes only" in error and extra == {}
        error, extra = learner._relabel("a0", "not a map")
        assert "must be a map" in error and extra == {}
        error, extra = learner._relabel("a0", {**relabel.to_meta(), "last_seq": 99})
        assert "not stored yet" in error and extra == {}  # the actor sends it again later
        error, extra = learner._relabel("a0", relabel.to_meta())  # a resend: done already
        assert error is None and extra == {"relabelled": 4}
        assert len(seen) == 1 and learner.store.repeated_relabels == 1  # the replay once
        other = dataclasses.replace(relabel, undone="failure")
        error, extra = learner._relabel("a0", other.to_meta())  # what the step no longer is
        assert "not the marked" in error and extra == {"relabelled": 4}  # refused for good
        (stored_episode,) = list(load_episodes(store))
        assert len(stored_episode.meta["label_history"]) == 1
    finally:
        actor.close()
        learner.close()


# -- the success counters follow an undo ---------------------------------------------------------


def test_the_tally_corrects_a_withdrawn_mark_once() -> None:
    tally = EpisodeTally(window=3, remember=4)
    tally.add(4, True, 1.0, 0.0)  # seq 4: a success mark
    tally.add(9, False, 0.0, 0.5)
    tally.add(14, True, 1.0, 0.0)
    assert (tally.episodes, tally.successes) == (3, 2)
    assert tally.success_rate == pytest.approx(2 / 3) and tally.mean_return == pytest.approx(2 / 3)
    assert tally.withdraw_mark(4, success=False, return_change=-1.0)
    assert (tally.episodes, tally.successes, tally.corrections) == (3, 1, 1)
    assert tally.success_rate == pytest.approx(1 / 3) and tally.mean_return == pytest.approx(1 / 3)
    # Again, or for an episode never counted: nothing changes.
    assert not tally.withdraw_mark(4, success=False, return_change=-1.0)
    assert not tally.withdraw_mark(5, success=False, return_change=-1.0)
    assert (tally.successes, tally.corrections) == (1, 1)
    assert tally.mean_return == pytest.approx(1 / 3)
    # A failure mark on a step the env had ended as a success: withdrawn, it counts as one.
    assert tally.withdraw_mark(9, success=True, return_change=1.0)
    assert tally.successes == 2 and tally.success_rate == pytest.approx(2 / 3)
    # Rates over the newest `window` episodes; an episode past `remember` is forgotten.
    tally.add(19, False, 0.0, 1.0)
    tally.add(24, False, 0.0, 1.0)
    assert tally.success_rate == pytest.approx(1 / 3)  # seq 14, 19, 24
    assert tally.intervention_rate == pytest.approx(2 / 3)
    assert not tally.withdraw_mark(4, success=True, return_change=1.0)  # forgotten
    assert (tally.episodes, tally.successes) == (5, 2)
    with pytest.raises(ValueError, match="window=0"):
        EpisodeTally(window=0)
    with pytest.raises(ValueError, match="remember=2"):
        EpisodeTally(window=3, remember=2)


class ScalarLog:
    """A metrics sink that keeps what it is given."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def scalar(self, name: str, value: float, step: int) -> None:
        self.values.setdefault(name, []).append(value)

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        """Nothing to release."""


class PostfixLog:
    """A progress bar that keeps its figures."""

    def __init__(self) -> None:
        self.postfix: dict[str, object] = {}

    def set_postfix(self, **figures: object) -> None:
        self.postfix = figures


def marked_episode(env: TwinEnv, length: int = 3) -> list[Transition]:
    """Env steps whose last carries a success mark (the env itself did not end it)."""
    obs, _ = env.reset(seed=0)
    rest = np.zeros(env.action_space.shape, np.float32)
    out = []
    for i in range(length):
        next_obs, reward, _, _, _ = env.step(rest)
        last = i == length - 1
        out.append(Transition(obs, rest, 1.0 if last else float(reward), next_obs, last, False,
                              False, 0.0))  # fmt: skip
        obs = next_obs
    return out


def undo_mark(episode: list[Transition], seq: int) -> AppliedMark:
    last = episode[-1]
    return AppliedMark(0, "success", last.action, last.next_obs["state"], SUCCESS_MARK,
                       StepFlags(0.0, False, False), seq)  # fmt: skip


def test_train_counts_a_withdrawn_success_mark_as_the_env_said(tmp_path: Path) -> None:
    from robot_rl.runtime.actor import EpisodeStats
    from robot_rl.runtime.train import TrainingSession
    from tests.runtime.test_train import tiny

    session = TrainingSession(tiny(tmp_path, demos=0))
    metrics, bar = ScalarLog(), PostfixLog()
    session.core.metrics, session._bar = metrics, bar
    try:
        episode = marked_episode(session.env)
        for step in episode:
            session.actor_link.add(step)
        marked = {"success": False, "operator_label": "success"}  # the env had not succeeded
        session._end_episode(marked, EpisodeStats(3, 1.0, 0), finished=True)
        session._show_progress()
        assert session.tally.successes == 1 and bar.postfix["assisted_success"] == "1.00"
        mark = undo_mark(episode, session.actor_link.next_seq - 1)
        session._undo_mark(mark)
        assert (session.tally.episodes, session.tally.successes) == (1, 0)
        assert metrics.values["actor/success_rate"] == [1.0, 0.0]
        assert metrics.values["actor/return"] == [1.0, 0.0]
        assert bar.postfix["assisted_success"] == "0.00"
        session._undo_mark(mark)  # again: relabelled once more on the way, counted once
        session._undo_mark(undo_mark(episode, 999))  # an episode never counted
        assert metrics.values["actor/success_rate"] == [1.0, 0.0]
        assert metrics.values["actor/marks_withdrawn"] == [1.0]
        assert session.counters.episodes == 1 and session.tally.successes == 0
        session.learner_link.poll()
        (stored,) = list(load_episodes(tmp_path / "tiny" / "episodes"))
        last = stored.transitions[-1]
        assert (last.reward, last.terminated, last.truncated) == (0.0, False, True)
        assert len(stored.meta["label_history"]) == 1
        assert session.learner_link.store.repeated_relabels == 1
        assert session.learner_link.relabels_failed == 1  # seq 999: no such episode
    finally:
        session.env.close()
        session.eval_env.close()


def test_a_distributed_actor_counts_a_withdrawn_mark_and_spools_the_relabel(
    tmp_path: Path,
) -> None:
    from robot_rl.runtime.actor import EpisodeStats
    from robot_rl.runtime.distributed import Actor, DistributedConfig
    from robot_rl.transport.learner_link import LinkEndpoints
    from robot_rl.transport.security import SecurityConfig
    from tests.netutil import free_port
    from tests.runtime.test_train import tiny

    ep = LinkEndpoints(f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
    net = DistributedConfig(ep, SecurityConfig(plaintext=True))
    actor = Actor(tiny(tmp_path, demos=0), net, tmp_path / "spool")
    try:
        episode = marked_episode(actor.env)
        for step in episode:
            actor.link.add(step)
        actor._end_episode({"operator_label": "success"}, EpisodeStats(3, 1.0, 0), True)
        assert (actor.episodes, actor.successes) == (1, 1)
        mark = undo_mark(episode, actor.link.last_step_seq)
        actor._undo_mark(mark)
        actor._undo_mark(mark)
        assert (actor.episodes, actor.successes, actor.tally.corrections) == (1, 0, 1)
        assert sorted(p.name for p in (tmp_path / "spool").glob("relabel_*")) == [
            "relabel_000000000002.json"
        ]  # held for the learner, also across a restart
    finally:
        actor.close(flush_timeout_s=0.0)
