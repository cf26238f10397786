"""scripts/reading_path.py on a tiny made-up checkout: the flags' walk follows the namespace through aliases,
constructors and the attribute it is stored in, and stops where only values are passed; everything reached follows
every name."""

from __future__ import annotations

import sys
import textwrap

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
try:
    import reading_path
finally:
    sys.path.remove(str(REPO_ROOT / "scripts"))

LIBRARY = """
def reads_flags(namespace):
    return namespace.steps


def takes_values(steps):
    return steps


class Run:
    def __init__(self, options, name):
        self.options, self.name = options, name

    def due(self, step):
        return step % self.options.every == 0

    def unrelated(self):
        return self.name
"""
SCRIPT = """
from dc_ae_hf.lib import Run, reads_flags, takes_values


def main(args):
    flags = args
    run = Run(flags, "x")
    takes_values(args.steps)
    return reads_flags(flags), run
"""


def test_the_flags_walk_and_everything_reached(tmp_path, capsys):
    for path, text in {"dc_ae_hf/lib.py": LIBRARY, "training/train.py": SCRIPT}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(textwrap.dedent(text).lstrip())
    (tmp_path / "examples").mkdir()
    reading_path.main(["--root", str(tmp_path), "training/train.py", "--list"])
    out = capsys.readouterr().out
    walked = {line.split()[-1] for line in out.splitlines() if line.strip().startswith("flags ")}
    # main, the alias `flags`, the constructor, the method reading the stored namespace, the function given it;
    # not `takes_values` (a value) nor `Run.unrelated` (never reads the namespace)
    assert walked == {
        "training.train.main",
        "dc_ae_hf.lib.Run.__init__",
        "dc_ae_hf.lib.Run.due",
        "dc_ae_hf.lib.reads_flags",
    }
    assert "the flags' walk: 11 lines in 4 functions, 2 files" in out  # 5 + 2 + 2 + 2: the defs' lines
    assert "everything reached: 18 lines in 4 definitions, 2 files" in out  # the class counts whole (9)
    reached = {line.split()[-1] for line in out.splitlines() if line.strip().startswith("reach ")}
    assert reached == {
        "training.train.main",
        "dc_ae_hf.lib.Run",
        "dc_ae_hf.lib.reads_flags",
        "dc_ae_hf.lib.takes_values",
    }
