"""README code blocks are executed, so the documentation cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_starts_with_exactly_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S)
    assert first_block is not None
    commands = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert [c.split("#")[0].strip() for c in commands] == ["make run", "make test"]


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_lists_every_config_range():
    from siamkit.config import ranges_table

    text = README.read_text()
    block = text.split("<!-- ranges: generated from siamkit.config.RANGES -->\n")[1].split("\n<!-- /ranges -->")[0]
    assert block == ranges_table()


def test_every_numeric_config_key_has_a_range():
    import dataclasses
    import typing

    from siamkit.config import RANGES, RunConfig

    def numeric_keys(cls, prefix=""):
        for f in dataclasses.fields(cls):
            hint = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(hint):
                yield from numeric_keys(hint, f"{prefix}{f.name}.")
            elif any(t in (int, float) for t in (hint, *typing.get_args(hint), *sum(map(typing.get_args,
                     typing.get_args(hint)), ()))):  # fmt: skip
                yield f"{prefix}{f.name}"

    missing = sorted(set(numeric_keys(RunConfig)) - set(RANGES))
    assert missing == []


def test_readme_calibrates_on_held_out_people_and_says_why():
    text = README.read_text()
    section = text.split("**Verify, and choose a threshold for your false-accept rate.**")[1].split("**Search.**")[0]
    commands = [line for line in section.splitlines() if line.startswith("siamkit calibrate")]
    assert commands and all("--hold-out" in c and "--data new_people/" in c for c in commands)
    assert "Why held-out people" in section and "shares identities" in section
