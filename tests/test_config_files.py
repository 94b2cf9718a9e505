"""Config files that are not configs (binary, deeply nested, huge) give one-line ConfigErrors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from robot_rl.config import ConfigError, load_config


@dataclass(frozen=True)
class Small:
    rate_hz: float = 10.0


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (bytes(range(256)) * 4, "is not UTF-8 text"),
        (b"rate_hz: 1\0\0\0", "NUL bytes"),
        (b"rate_hz: " + b"[" * 5000 + b"]" * 5000, "nests"),
        (b"a:\n" + b"".join(b"  " * i + b"k:\n" for i in range(1, 200)), "nests more than 64"),
        (b"rate_hz: [1, 2\n  - : {", "is not valid YAML"),
        (b"#" * (2 << 20), "over 1048576 bytes"),
    ],
)
def test_a_file_that_is_not_a_config_gives_a_one_line_error(
    tmp_path: Path, content: bytes, pattern: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=pattern) as info:
        load_config(Small, path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_good_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("rate_hz: 12.5\n")
    assert load_config(Small, path) == Small(12.5)
