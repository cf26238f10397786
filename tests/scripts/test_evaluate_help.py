"""`--help` of the scripts that do not train (the evaluations, the latent cache) shows the default of every flag."""

from __future__ import annotations

import argparse
import importlib.util

import pytest
from conftest import REPO_ROOT

SCRIPTS = ("cache_latents", "evaluate_dc_ae", "evaluate_usit", "make_reference_statistics")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_every_default(name, capsys):
    parser = _load(name).build_parser()
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    flags = [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    assert len(flags) >= 10
    optional = [action for action in flags if not action.required]
    for action in flags:
        # The help text argparse prints for this flag, with the defaults formatter's "(default: ...)" expanded.
        text = parser._get_formatter()._expand_help(action)
        assert text and "%(" not in text, action.option_strings
        if action.required:  # no default to show (and no misleading "(default: None)")
            assert "(default" not in text and action.default is argparse.SUPPRESS, (action.option_strings, text)
        else:
            assert text.endswith(f"(default: {action.default})"), (action.option_strings, text)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--help"])
    assert info.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert printed.count("(default: ") == len(optional) and len(optional) >= len(flags) - 3
    for action in flags:
        assert action.option_strings[0] in printed
