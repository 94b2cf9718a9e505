"""An operator's withdrawn mark survives an actor kill: the actor link writes each pending relabel
to its spool as soon as it is asked (JSON, fsynced, renamed into place), deletes it when the
learner acknowledges it, and a restarted actor with the same spool sends the pending ones once
the learner holds their steps. The learner applies a resent relabel once. Untrusted relabel
files are moved aside with one logged line, and the actor runs on.

A kill is taken as a copy of the spool directory at that moment: what a kill -9 leaves on disk.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from robot_rl.data.episode_labels import StepFlags, StepRelabel
from robot_rl.data.episodes import load_episodes
from robot_rl.transport import actor_link as actor_link_module
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

pytestmark = pytest.mark.timeout(60)

SUCCESS_MARK = StepFlags(1.0, True, False)  # what a success mark made of the last step
RESTORED = StepFlags(0.0, False, True)  # the env's flags back; the episode stays ended


def undo_of(episode: list, last_seq: int, actor: str = "a0") -> StepRelabel:
    last = episode[-1]
    return StepRelabel(actor, last_seq, "success", SUCCESS_MARK, RESTORED, last.action,
                       last.next_obs["state"])  # fmt: skip


def pending_files(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.glob("relabel_*"))


def test_a_relabel_is_on_disk_when_asked_and_gone_when_acknowledged(tmp_path: Path) -> None:
    ep, store, spool = free_endpoints(), tmp_path / "store", tmp_path / "spool"
    actor = ActorLink(actor_config(ep, spool), PLAIN)
    learner = None
    try:
        episode = episode_steps(0, 5)
        for step in episode:
            actor.add(step)
        relabel = undo_of(episode, actor.last_step_seq)
        actor.relabel(relabel)  # no learner yet: nothing can acknowledge it
        assert pending_files(spool) == ["relabel_000000000004.json"]
        document = json.loads((spool / "relabel_000000000004.json").read_text())
        assert document["format"] == 1
        assert StepRelabel.from_meta(document["relabel"]).to_meta() == relabel.to_meta()
        assert not list(spool.glob(".relabel.*"))  # no temporary file left behind
        learner = start_learner(ep, store, Sink())
        run_until(learner, actor, lambda: actor.relabels_pending == 0)
        assert actor.relabels_done == 1 and pending_files(spool) == []
        with pytest.raises(ValueError, match="actor_id='b1'"):  # the learner would refuse it
            actor.relabel(undo_of(episode, 4, actor="b1"))
        assert pending_files(spool) == []
    finally:
        actor.close()
        if learner is not None:
            learner.close()


def test_a_killed_actor_resends_its_relabel_after_a_restart_and_it_is_applied_once(
    tmp_path: Path,
) -> None:
    ep, store, spool = free_endpoints(), tmp_path / "store", tmp_path / "spool"
    killed_before_sending = tmp_path / "spool-killed-early"  # the spool as a kill left it
    killed_before_the_ack = tmp_path / "spool-killed-late"
    episode = episode_steps(0, 5)
    actor = ActorLink(actor_config(ep, spool), PLAIN)
    try:
        for step in episode:
            actor.add(step)
        actor.relabel(undo_of(episode, actor.last_step_seq))
        shutil.copytree(spool, killed_before_sending)
        shutil.copytree(spool, killed_before_the_ack)
    finally:
        actor.close()

    # An actor restarted on the spool of one killed before any learner saw its steps: the
    # spooled steps are sent first, the relabel once the learner holds the step it names.
    learner = start_learner(ep, store, Sink())
    relabelled = []
    learner.on_relabel = relabelled.append
    restarted = ActorLink(actor_config(ep, killed_before_sending), PLAIN)
    try:
        assert restarted.relabels_pending == 1
        run_until(learner, restarted, lambda: restarted.relabels_pending == 0)
        assert restarted.relabels_done == 1 and pending_files(killed_before_sending) == []
    finally:
        restarted.close()
    (stored,) = list(load_episodes(store))
    assert len(stored.transitions) == 5  # the spooled steps, stored before the relabel
    final = stored.transitions[-1]
    assert (final.reward, final.terminated, final.truncated) == (0.0, False, True)
    assert [r.last_seq for r in relabelled] == [4]
    applied_bytes = stored.path.read_bytes()

    # One killed after the learner applied the relabel but before its ack arrived: the resend
    # is acknowledged as done and changes nothing, on disk or in replay.
    again = ActorLink(actor_config(ep, killed_before_the_ack), PLAIN)
    try:
        assert again.relabels_pending == 1
        run_until(learner, again, lambda: again.relabels_pending == 0)
        assert again.relabels_done == 1 and again.learner_errors == 0
        assert pending_files(killed_before_the_ack) == []
    finally:
        again.close()
        learner.close()
    (stored,) = list(load_episodes(store))
    assert len(stored.meta["label_history"]) == 1 and stored.path.read_bytes() == applied_bytes
    assert len(relabelled) == 1 and learner.store.repeated_relabels == 1


def write_relabel_file(spool: Path, name: str, content: object) -> Path:
    path = spool / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_untrusted_relabel_files_are_moved_aside_and_the_actor_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ep, spool = free_endpoints(), tmp_path / "spool"
    spool.mkdir()
    (spool / "next_seq").write_text("10")  # this actor has sealed seq 0-9
    episode = episode_steps(0, 5)
    good = {"format": 1, "relabel": undo_of(episode, 4).to_meta()}
    nan_reward = {**good["relabel"], "restored": {**RESTORED.as_dict(), "reward": float("nan")}}
    another_actor = {**good["relabel"], "last_seq": 5, "actor_id": "b1"}
    bad = {
        "relabel_000000000001.json": "not json {",
        "relabel_000000000002.json": b"\xff\xfe{}",  # not UTF-8
        "relabel_000000000003.json": {"format": 2, "relabel": good["relabel"]},
        "relabel_000000000005.json": {"format": 1, "relabel": another_actor},
        "relabel_000000000006.json": good,  # the name says 6, the content 4
        "relabel_000000000007.json": {"format": 1, "relabel": {**nan_reward, "last_seq": 7}},
        "relabel_000000000008.json": {"format": 1, "relabel": [1, 2]},
        "relabel_000000000099.json": {**good, "relabel": {**good["relabel"], "last_seq": 99}},
        "relabel_000000000011.json": "[" * 100_000,  # nesting deep enough to overflow a parser
    }
    for name, content in bad.items():
        write_relabel_file(spool, name, content)
    write_relabel_file(spool, "relabel_000000000004.json", good)
    (spool / "relabel_000000000012.json").mkdir()  # not a regular file
    os.symlink("/dev/zero", spool / "relabel_000000000013.json")
    (spool / ".relabel.abc123").write_text("{")  # a write a kill cut short
    (spool / ".relabel.dir").mkdir()  # not removable as a file: left, and the actor starts
    caplog.set_level(logging.ERROR, logger="robot_rl.transport.actor_link")
    actor = ActorLink(actor_config(ep, spool), PLAIN)
    try:
        assert actor.relabels_pending == 1  # only the good one, seq 4
        assert actor.relabels_set_aside == len(bad) + 2
        set_aside = [f"relabel_{seq:012d}.corrupt" for seq in (1, 2, 3, 5, 6, 7, 8, 11, 12, 13, 99)]
        assert pending_files(spool) == sorted(["relabel_000000000004.json", *set_aside])
        assert [p.name for p in spool.glob(".relabel.*")] == [".relabel.dir"]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == len(bad) + 2 and all("\n" not in e for e in errors)
        assert any("format=2" in e and "relabel_000000000003.json" in e for e in errors)
        assert any("actor_id='b1'" in e for e in errors)
        assert any("differs from the file name" in e for e in errors)
        assert any("last_seq=99" in e and "sealed only seq < 10" in e for e in errors)
        assert any("not a regular file" in e for e in errors)
        assert all("moved aside as relabel_" in e for e in errors)
        actor.pump()  # the actor runs on
    finally:
        actor.close()


def test_past_the_limit_the_oldest_relabel_is_kept_aside_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actor_link_module, "MAX_PENDING_RELABELS", 2)
    spool = tmp_path / "spool"
    actor = ActorLink(actor_config(free_endpoints(), spool), PLAIN)
    try:
        episodes = [episode_steps(5 * i, 5) for i in range(3)]
        for episode in episodes:
            for step in episode:
                actor.add(step)
            actor.relabel(undo_of(episode, actor.last_step_seq))
        assert actor.relabels_pending == 2 and actor.relabels_set_aside == 1
        assert pending_files(spool) == ["relabel_000000000004.dropped",
                                        "relabel_000000000009.json",
                                        "relabel_000000000014.json"]  # fmt: skip
        assert "2 relabels held in the spool" in actor.stop_summary()
    finally:
        actor.close()


def test_a_relabel_the_spool_cannot_take_is_still_sent_while_the_actor_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ep, store, spool = free_endpoints(), tmp_path / "store", tmp_path / "spool"
    actor = ActorLink(actor_config(ep, spool), PLAIN)
    learner = start_learner(ep, store, Sink())

    def disk_full(relabel: StepRelabel) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(actor, "_write_relabel", disk_full)
    try:
        episode = episode_steps(0, 5)
        for step in episode:
            actor.add(step)
        with caplog.at_level(logging.ERROR, logger="robot_rl.transport.actor_link"):
            actor.relabel(undo_of(episode, actor.last_step_seq))
        assert "held in memory only" in caplog.text and pending_files(spool) == []
        run_until(learner, actor, lambda: actor.relabels_pending == 0)
        assert actor.relabels_done == 1
    finally:
        actor.close()
        learner.close()
