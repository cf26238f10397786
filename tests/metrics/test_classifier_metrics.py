"""The small-classifier generation metrics used by the toy reproduction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dc_ae_hf.data.shapes import render_shape_image
from dc_ae_hf.metrics.classifier import SmallImageClassifier, classifier_metrics, train_classifier


def _shapes(start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    pictures = [render_shape_image(i, seed=7, resolution=32) for i in range(start, start + count)]
    images = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p, _ in pictures])
    return images.float() / 127.5 - 1, torch.tensor([label for _, label in pictures])


def test_classifier_learns_shapes_and_metrics_behave(tmp_path):
    train_x, train_y = _shapes(0, 500)
    test_x, test_y = _shapes(500, 100)
    model = train_classifier(train_x, train_y, num_classes=10, steps=300, width=16, seed=0)
    # Held-out real images: well above chance (0.1) after this short training; against themselves FD is ~0.
    same = classifier_metrics(model, test_x, test_y, reference=test_x)
    assert same["class_accuracy"] > 0.35
    assert abs(same["classifier_fd"]) < 1e-3
    # Wrong labels drop accuracy; noise images are far from real ones in feature space.
    shuffled = classifier_metrics(model, test_x, (test_y + 1) % 10, reference=test_x)
    assert shuffled["class_accuracy"] < same["class_accuracy"] - 0.2
    noise = classifier_metrics(model, torch.rand_like(test_x) * 2 - 1, test_y, reference=test_x)
    assert noise["classifier_fd"] > 10 * max(abs(same["classifier_fd"]), 1e-3)
    # Deterministic per seed, and it saves like any diffusers model.
    first, second = (train_classifier(train_x, train_y, num_classes=10, steps=3, width=16, seed=1) for _ in range(2))
    torch.testing.assert_close(first(test_x[:4]), second(test_x[:4]))
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(SmallImageClassifier.from_pretrained(tmp_path)(test_x[:4]), model(test_x[:4]))


def test_bad_inputs():
    with pytest.raises(ValueError, match="must match"):
        train_classifier(torch.zeros(4, 3, 32, 32), torch.zeros(3, dtype=torch.long), num_classes=10)
    images, labels = torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="steps=0 .*>= 1"):
        train_classifier(images, labels, num_classes=10, steps=0)
    with pytest.raises(TypeError, match="steps=2.5 .*int"):
        train_classifier(images, labels, num_classes=10, steps=2.5)
    with pytest.raises(ValueError, match="width=6 .*multiple of 4"):
        train_classifier(images, labels, num_classes=10, width=6)
    with pytest.raises(ValueError, match="lr=0.0 .*> 0"):
        train_classifier(images, labels, num_classes=10, lr=0.0)
