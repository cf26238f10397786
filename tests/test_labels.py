"""One id2label check (dc_ae_hf.labels) through its entry points: the converter's --id2label file and
DCAE15Pipeline's id2label argument. Ids must be exactly 0..num_classes-1, or one line names the argument and file."""

from __future__ import annotations

import json
import re

import pytest
from conftest import TINY_AE15_CONFIG, fixture_path
from helpers import official_usit

from dc_ae_hf.convert.cli import main as convert_main
from dc_ae_hf.models.autoencoder_dc15 import AutoencoderDC15
from dc_ae_hf.pipelines.pipeline_dcae15 import DCAE15Pipeline

AE = str(fixture_path("ae15_a.original.safetensors"))
USIT = str(fixture_path("usit_a.original.safetensors"))  # 10 classes
FLAGS = ["--num_attention_heads", "4", "--latent_channel_choices", "4", "8", "12", "16", "--scaling_factor", "0.8"]
GAP = {str(i): f"c{i}" for i in [*range(5), *range(6, 11)]}  # ten names, ids 0-4 and 6-10: 10 is the null class


@pytest.mark.parametrize(
    "text, problem",
    [
        (None, "no such file"),
        ('{"0": "a", "1": "b"', r"not valid JSON \(Expecting .* at line 1 column"),
        ('["a", "b"]', r"must hold a JSON object .*got a JSON list"),
        ('{"0": "a", "one": "b"}', r"its keys must be integer class ids, got 'one'"),
        ('{"-1": "a", "0": "b"}', r"class ids must be >= 0, got '-1'"),
        ('{"0": "a", "1": "b", "1": "c"}', r"the key '1' appears twice"),
        ('{"0": "a", "00": "b"}', r"class id 0 appears twice"),
        ('{"0": "a", "1": ""}', r"the name of class 1 must be a non-empty string"),
        (json.dumps(GAP), r"exactly 0\.\.9, one per class; missing 5; unexpected 10"),
        # structurally fine, but 5 names for the transformer's 10 classes: found once the checkpoint is read
        (json.dumps({str(i): f"c{i}" for i in range(5)}), r"it names 5 classes but the transformer has 10; missing"),
    ],
)
def test_converter_refuses_a_bad_id2label_file(tmp_path, capsys, text, problem):
    path = tmp_path / "labels.json"
    if text is not None:
        path.write_text(text)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        convert_main(
            ["pipeline", "--autoencoder", AE, "--transformer", USIT, *FLAGS, "--id2label", str(path)]
            + ["--output", str(out)]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: --id2label={str(path)!r} is not allowed: ")
    assert re.search(problem, err[0]), err[0]
    assert not out.exists() or not any(out.iterdir())  # nothing written


@pytest.fixture(scope="module")
def models():
    return official_usit(), AutoencoderDC15(**TINY_AE15_CONFIG).eval()


def test_pipeline_refuses_ids_that_are_not_0_to_num_classes(models):
    transformer, vae = models
    with pytest.raises(
        ValueError,
        match=r"^id2label is not allowed: .*missing 5; unexpected 10 \(10 would be the "
        r"transformer's null class",
    ):
        DCAE15Pipeline(transformer, vae, id2label=GAP)
    with pytest.raises(ValueError, match="it names 3 classes but the transformer has 10"):
        DCAE15Pipeline(transformer, vae, id2label={0: "a", 1: "b", 2: "c"})
    with pytest.raises(ValueError, match="its keys must be integer class ids, got 'x'"):
        DCAE15Pipeline(transformer, vae, id2label={"x": "a"})


def test_pipeline_accepts_int_or_string_ids_and_lists_the_names_of_an_unknown_class(models):
    transformer, vae = models
    names = {str(i): f"shape {i}, form {i}" for i in range(10)}
    pipe = DCAE15Pipeline(transformer, vae, id2label=names)
    assert pipe.get_label_ids(["form 3", "SHAPE 9"]) == [3, 9]
    assert DCAE15Pipeline(transformer, vae, id2label={int(k): v for k, v in names.items()}).labels == pipe.labels
    with pytest.raises(
        ValueError,
        match=r"Unknown class label 'tiger'\. The model's classes \(id, name\): 0 'shape 0', "
        r"1 'shape 1', .* 9 'shape 9'\.$",
    ):
        pipe.get_label_ids("tiger")
