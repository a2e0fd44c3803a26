"""The README's tutorial runs as written: its files match the code, its blocks run in order."""

from __future__ import annotations

import re
import shlex
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"```(python|console)\n(.*?)```", re.S)

pytestmark = pytest.mark.django_db


def tutorial_blocks() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Tutorial")
    end = readme.index("\n## ", start + 1)
    return FENCE.findall(readme[start:end])


def test_tutorial_runs_as_written(emulator: Any) -> None:
    namespace: dict[str, Any] = {}
    blocks = tutorial_blocks()
    assert len(blocks) >= 4
    for kind, code in blocks:
        first_line = code.splitlines()[0]
        if kind == "python" and first_line.startswith("# ") and first_line.endswith(".py"):
            # A file shown in full must be the file the project really has.
            path = ROOT / first_line[2:].strip()
            assert code.split("\n", 1)[1] == path.read_text(), f"README differs from {path}"
        elif kind == "python":
            exec(compile(code, "README tutorial", "exec"), namespace)
        else:
            for line in code.strip().splitlines():
                args = shlex.split(line)
                assert args[:2] == ["python", "manage.py"], line
                call_command(*args[2:], stdout=StringIO(), stderr=StringIO())
    batch = namespace["batch"]
    assert batch.completions.filter(status="completed").count() == 2
