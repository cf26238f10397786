"""EMA checkpoints (`dc_ae_hf/training/ema.py`): `load_ema` restores what `save_pretrained` wrote, quietly."""

from __future__ import annotations

import warnings

import torch

from dc_ae_hf.models.transformer_usit import USiTTransformer2DModel
from dc_ae_hf.training.ema import ExponentialWarmupEMAModel, load_ema, load_ema_model


def _ema(seed: int) -> ExponentialWarmupEMAModel:
    torch.manual_seed(seed)
    model = USiTTransformer2DModel(
        sample_size=2, in_channels=4, num_classes=3, num_layers=2, num_attention_heads=2, attention_head_dim=8
    )
    return ExponentialWarmupEMAModel(
        model.parameters(), decay=0.99, warmup_steps=10, model_cls=USiTTransformer2DModel, model_config=model.config
    )


def test_load_ema_restores_weights_and_counters_without_warnings(tmp_path, capfd):
    saved = _ema(0)
    for step in range(3):  # counters and shadow weights that differ from a fresh EMA
        saved.step([p + step for p in saved.shadow_params])
    saved.save_pretrained(tmp_path / "ema")
    capfd.readouterr()
    resumed = _ema(1)
    resumed.warmup_steps = 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # diffusers' FutureWarning of EMAModel.from_pretrained
        load_ema(resumed, tmp_path / "ema")
    assert capfd.readouterr().err == ""  # no "config attributes {'decay': ...} were passed ..." log lines
    assert (resumed.optimization_step, resumed.decay, resumed.warmup_steps) == (3, 0.99, 10)
    assert all(torch.equal(a, b) for a, b in zip(resumed.shadow_params, saved.shadow_params, strict=True))


def test_load_ema_model_gives_the_ema_weights_as_a_model_without_warnings(tmp_path, capfd):
    saved = _ema(0)
    saved.step([p + 1 for p in saved.shadow_params])
    saved.save_pretrained(tmp_path / "ema")  # what a checkpoint's <name>_ema folder holds
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_ema_model(tmp_path / "ema", USiTTransformer2DModel)
    assert capfd.readouterr().err == ""  # the EMA's settings in config.json are not passed to the model class
    assert isinstance(model, USiTTransformer2DModel) and model.config.num_layers == 2
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), saved.shadow_params, strict=True))
