"""One flag vocabulary across the scripts under training/: the scripts that do not train spell every flag they share
with the trainers as the trainers do (`dc_ae_hf/training/arguments.py`), a spelling means one thing in every script,
and the older spellings still parse, to the same value."""

from __future__ import annotations

import argparse

import pytest
from helpers import load_script

from dc_ae_hf.training.arguments import (
    add_channel_arguments,
    add_image_data_arguments,
    add_optimization_arguments,
    add_run_arguments,
    make_parser,
)

SCRIPTS = ("cache_latents", "evaluate_dc_ae", "evaluate_usit", "make_reference_statistics")

# The minimal valid command line of each script, and every renamed flag: (old spelling, new spelling, value).
REQUIRED = {
    "cache_latents": ["--vae", "ae", "--output_dir", "out", "--dataset_name", "d"],
    "evaluate_dc_ae": ["--pretrained_model_name_or_path", "ae", "--output_json", "e.json"],
    "evaluate_usit": ["--pipeline", "p", "--sample_dir", "s", "--output_json", "e.json"],
    "make_reference_statistics": ["--output", "r.npz"],
}
RENAMED = {
    "cache_latents": [("--flip", "--random_flip", None)],
    "evaluate_dc_ae": [
        ("--data_dir", "--train_data_dir", "images"),
        ("--num_images", "--max_images", "7"),
        ("--num_workers", "--dataloader_num_workers", "3"),
        ("--dtype", "--vae_dtype", "bfloat16"),
        ("--output_md", "--output_markdown", "table.md"),
    ],
    "evaluate_usit": [("--output_md", "--output_markdown", "table.md")],
    "make_reference_statistics": [("--feature_layer", "--fid_feature_layer", "192")],
}


def _parser(name: str) -> argparse.ArgumentParser:
    return load_script(name).build_parser()


def _trainer_vocabulary() -> dict[str, list[str]]:
    """dest -> option strings of the flags the trainers share (their parsers are built from these groups)."""
    parser = make_parser("vocabulary")
    add_channel_arguments(parser, "channels", "")
    add_image_data_arguments(parser)
    optimiser = {"learning_rate": 1e-4, "betas": (0.9, 0.999), "lr_scheduler": "constant", "lr_warmup_steps": 0}
    add_optimization_arguments(parser, **optimiser, max_grad_norm=None, max_train_steps=1)
    add_run_arguments(parser, output_dir="out", checkpointing_steps=1, every=1)
    return {action.dest: action.option_strings for action in parser._actions if action.option_strings}


@pytest.mark.parametrize("name", SCRIPTS)
def test_old_and_new_spellings_parse_to_the_same_value(name):
    parser = _parser(name)
    for old, new, value in RENAMED[name]:
        given = [] if value is None else [value]
        before = parser.parse_args([*REQUIRED[name], old, *given])
        after = parser.parse_args([*REQUIRED[name], new, *given])
        assert vars(before) == vars(after), (old, new)
        dest = parser._option_string_actions[new].dest
        assert dest == new.removeprefix("--") and parser._option_string_actions[old].dest == dest
        assert getattr(after, dest) != parser.get_default(dest), (new, "the flag was not applied")


def test_every_shared_flag_is_spelled_as_the_trainers_spell_it():
    vocabulary = _trainer_vocabulary()
    meaning: dict[str, str] = {}  # option string -> dest, over the trainers' groups and every script
    primary: dict[str, str] = {dest: strings[0] for dest, strings in vocabulary.items()}
    for dest, strings in vocabulary.items():
        meaning.update(dict.fromkeys(strings, dest))
    shared = set()
    for name in SCRIPTS:
        for action in _parser(name)._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            if action.dest in vocabulary:  # the trainers' spelling first, and their aliases too
                shared.add(action.dest)
                assert set(vocabulary[action.dest]) <= set(action.option_strings), (name, action.option_strings)
            # one primary spelling per dest in every script, one dest per spelling
            first = action.option_strings[0]
            assert primary.setdefault(action.dest, first) == first, (name, action.dest)
            for string in action.option_strings:
                assert meaning.setdefault(string, action.dest) == action.dest, (name, string)
    # the data and loader flags come from the trainers' declarations
    assert {"train_data_dir", "dataset_name", "split", "resolution", "dataloader_num_workers", "random_flip"} <= shared
