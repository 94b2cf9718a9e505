"""Checkpoints: exact resume, atomic writes, clear errors for missing, corrupt, mismatched files."""

from __future__ import annotations

import os
import re

import pytest
import torch

from robot_rl.agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.agents.fakes import make_agent, random_batch

# Randomness in every path: subsampled critics, DrQ shifts, actor noise, two critic steps/update.
CONFIG = dict(critic_ensemble_size=3, critic_subsample=2, utd_ratio=2, image_augmentation_pad=2)


def flatten(state: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts / lists of a state_dict as {"a.b.0": leaf}."""
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, list | tuple):
        items = enumerate(state)
    else:
        return {prefix: state}
    out: dict[str, object] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def assert_same_state(a: dict, b: dict) -> None:
    flat_a, flat_b = flatten(a), flatten(b)
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, flat_b[key]), key
        else:
            assert value == flat_b[key], key


def test_resume_from_a_checkpoint_is_exact(tmp_path):
    batches = [random_batch(make_agent(), 16, seed=s) for s in range(5)]
    path = tmp_path / "agent.pt"

    agent = make_agent(seed=0, **CONFIG)
    for batch in batches[:2]:
        agent.update(batch)
    save_checkpoint(path, agent, {"env_steps": 1234, "note": "after 2 updates"})
    for batch in batches[2:]:
        agent.update(batch)
    p1 = agent.state_dict()

    resumed = make_agent(seed=99, **CONFIG)  # another seed: everything must come from the file
    extra = load_checkpoint(path, resumed)
    assert extra == {"env_steps": 1234, "note": "after 2 updates"}
    assert resumed.critic_steps == 4 and resumed.actor_steps == 2
    for batch in batches[2:]:
        resumed.update(batch)
    p2 = resumed.state_dict()

    assert_same_state(p1, p2)
    assert "optimizers.critic.state.0.exp_avg" in flatten(p2)  # optimizer moments compared too


def test_save_leaves_no_temporary_files_and_overwrites(tmp_path):
    agent = make_agent()
    path = tmp_path / "agent.pt"
    save_checkpoint(path, agent, {"step": 1})
    save_checkpoint(path, agent, {"step": 2})
    assert os.listdir(tmp_path) == ["agent.pt"]
    assert load_checkpoint(path, make_agent())["step"] == 2


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    agent = make_agent()
    path = tmp_path / "agent.pt"
    save_checkpoint(path, agent, {"step": 1})
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, agent, {"step": 2})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["agent.pt"]


def test_extra_must_be_plain_values(tmp_path):
    with pytest.raises(ValueError, match=r"extra\['when'\] is a object"):
        save_checkpoint(tmp_path / "a.pt", make_agent(), {"when": object()})
    assert not os.listdir(tmp_path)


def test_missing_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "missing.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{path} does not exist")):
        load_checkpoint(path, make_agent())


def test_corrupt_checkpoint_names_the_path(tmp_path):
    path = tmp_path / "agent.pt"
    save_checkpoint(path, make_agent(), {})
    path.write_bytes(path.read_bytes()[:1000])  # a truncated write from some other tool
    with pytest.raises(CheckpointError, match=re.escape(f"{path} is corrupt")):
        load_checkpoint(path, make_agent())


def test_a_torch_file_that_is_not_a_checkpoint_is_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a robot-rl agent checkpoint"):
        load_checkpoint(path, make_agent())


def test_the_learner_reads_counters_through_the_same_checks(tmp_path):
    """checkpoint_counters uses the one reader: a torch file that is not a checkpoint, or a
    truncated one, is the same one-line CheckpointError as for load_checkpoint."""
    from robot_rl.runtime.learner import checkpoint_counters

    assert checkpoint_counters(tmp_path / "none.pt") is None
    other = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3), "extra": {"updates": 5}}, other)
    with pytest.raises(CheckpointError, match="not a robot-rl agent checkpoint"):
        checkpoint_counters(other)
    path = tmp_path / "agent.pt"
    save_checkpoint(path, make_agent(), {"counters": {"env_steps": 40, "updates": 7}})
    counters = checkpoint_counters(path)
    assert (counters.env_steps, counters.updates) == (40, 7)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=re.escape(f"{path} is corrupt")):
        checkpoint_counters(path)


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    path = tmp_path / "agent.pt"
    save_checkpoint(path, make_agent(), {})
    with pytest.raises(ValueError, match="critic_ensemble_size: saved 2, this agent 3"):
        load_checkpoint(path, make_agent(critic_ensemble_size=3))
    with pytest.raises(CheckpointError, match="does not fit this agent"):
        load_checkpoint(path, make_agent(state_dim=7))


def test_conv_preset_is_part_of_the_architecture():
    # A checkpoint from before conv_preset existed holds the standard layers.
    old_state = make_agent().state_dict()
    del old_state["config"]["conv_preset"]
    make_agent(seed=1).load_state_dict(old_state)
    with pytest.raises(ValueError, match="conv_preset: saved 'lean', this agent 'standard'"):
        make_agent().load_state_dict(make_agent(conv_preset="lean").state_dict())


def test_state_input_is_part_of_the_architecture_and_older_checkpoints_fed_it_raw():
    """Same weights, another function: a symlog agent refuses a raw checkpoint and back. A
    checkpoint saved before the field existed fed its state raw, so it loads only where asked."""
    with pytest.raises(ValueError, match="state_input: saved 'raw', this agent 'symlog'"):
        make_agent().load_state_dict(make_agent(state_input="raw").state_dict())
    old_state = make_agent(state_input="raw").state_dict()
    del old_state["config"]["state_input"]
    make_agent(seed=1, state_input="raw").load_state_dict(old_state)
    with pytest.raises(ValueError, match="state_input: saved 'raw', this agent 'symlog'"):
        make_agent(seed=1).load_state_dict(old_state)


def test_random_streams_of_another_device_type_are_not_restored(tmp_path, caplog):
    agent = make_agent()
    state = agent.state_dict()
    state["rng"]["device_type"] = "cuda"  # as if saved on a GPU learner
    other = make_agent(seed=3)
    before = other.update_generator.get_state()
    other.load_state_dict(state)
    assert torch.equal(other.update_generator.get_state(), before)
    assert "cannot be restored on cpu" in caplog.text
    assert torch.equal(other.critic.net[0].weight, agent.critic.net[0].weight)
