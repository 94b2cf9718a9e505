"""Every ``robot-rl ...`` command line in the README parses with the CLI as it is now (README drift
fails here): the code spans and the shell blocks are extracted and parsed, nothing is run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from robot_rl import cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"`([^`]+)`")


def readme_commands(text: str) -> list[str]:
    """The ``robot-rl`` command lines of ``text``: each inline code span that starts with one
    (joined across line breaks), and each ``robot-rl`` command in a fenced block (split at ``&&``
    and ``;``). A span listing alternatives (``reward collect / train``) names commands, it is not
    one, and is left out."""
    commands = []
    for block in FENCE.findall(text):
        for part in re.split(r"&&|;|\n", block):
            if part.strip().startswith("robot-rl "):
                commands.append(part.strip())
    for span in SPAN.findall(FENCE.sub("", text)):
        line = " ".join(span.split())
        if (line == "robot-rl" or line.startswith("robot-rl ")) and " / " not in line:
            commands.append(line)
    return commands


def test_the_extraction_finds_spans_across_lines_and_shell_blocks() -> None:
    text = ("Run `robot-rl demo --task\n  reach` or `robot-rl reward collect / train`.\n"
            "```bash\npip install -e . && robot-rl train --steps 5\n```\n")  # fmt: skip
    assert readme_commands(text) == ["robot-rl train --steps 5", "robot-rl demo --task reach"]


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_has_the_commands_it_documents() -> None:
    # Quickstart's main job and a few of "More": if these vanish the extraction is broken.
    assert "robot-rl train --config robot_rl/configs/reach_state.yaml" in COMMANDS
    assert any(c.startswith("robot-rl session start ") for c in COMMANDS)
    assert any(c.startswith("robot-rl reward train ") for c in COMMANDS)
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses(command: str) -> None:
    argv = shlex.split(command)[1:]
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_:
            cli.build_parser().parse_args(argv)
        assert exit_.value.code == 0
        return
    try:
        cli.build_parser().parse_args(argv)
    except cli.CliError as exc:
        pytest.fail(f"README command {command!r} does not parse: {exc}")
    for token in argv:  # the shipped files it names exist
        if token.startswith("robot_rl/configs/"):
            assert (ROOT / token).is_file(), f"README command {command!r}: {token} is missing"
