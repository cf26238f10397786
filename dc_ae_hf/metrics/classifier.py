"""Generation metrics for small class-conditional datasets whose floor is near zero: a small CNN classifier gives
the class accuracy of generated samples and a feature space for a Frechet distance.

Inception features are tuned to ImageNet photographs; on 32 px procedural shapes their FID is dominated by
textures and by the autoencoder's blur. A classifier trained on the autoencoder's *reconstructions* of real images
measures what a diffusion model adds on top of the autoencoder: generated samples of a perfect model score the same
accuracy and (up to sampling noise) zero Frechet distance as reconstructions of held-out real images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from dc_ae_hf.checks import check_int, check_number, invalid
from dc_ae_hf.metrics.frechet import feature_statistics, frechet_distance


class SmallImageClassifier(ModelMixin, ConfigMixin):
    """Three strided conv stages, global average pooling, a linear head. Inputs (B, 3, H, W) in [-1, 1].

    Args:
        num_classes: number of classes.
        width: channels of the first stage (doubled at each of the next two).
    """

    @register_to_config
    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stages = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GroupNorm(8, 2 * width),
            nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.GroupNorm(8, 4 * width),
            nn.GELU(),
            nn.Conv2d(4 * width, 4 * width, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 4 * width) pooled features (the Frechet-distance space)."""
        return self.stages(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, num_classes) logits


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    width: int = 32,
) -> SmallImageClassifier:
    """Train a `SmallImageClassifier` with AdamW and random horizontal flips; returns it in eval mode."""
    if images.ndim != 4 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"images (N, 3, H, W) and labels (N,) must match, got {tuple(images.shape)}, {tuple(labels.shape)}"
        )
    num_classes = check_int("num_classes", num_classes, minimum=2)
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    width = check_int("width", width, minimum=4)
    if width % 4:  # the stages' GroupNorm(8, 2 * width)
        raise invalid("width", width, "must be a multiple of 4 (the model has GroupNorm(8, 2 * width))")
    lr = check_number("lr", lr, minimum=0.0, exclusive_minimum=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SmallImageClassifier(num_classes=num_classes, width=width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(steps):
        index = torch.randint(images.shape[0], (batch_size,), generator=generator)
        x, y = images[index], labels[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def classifier_outputs(model: SmallImageClassifier, images: torch.Tensor, batch_size: int = 256):
    """(logits, features) for a tensor of images in [-1, 1]."""
    batch_size = check_int("batch_size", batch_size, minimum=1)
    logits, features = [], []
    for chunk in images.split(batch_size):
        f = model.features(chunk)
        features.append(f)
        logits.append(model.head(f))
    return torch.cat(logits), torch.cat(features)


@torch.no_grad()
def classifier_metrics(
    model: SmallImageClassifier,
    generated: torch.Tensor,
    generated_labels: torch.Tensor,
    reference: torch.Tensor,
) -> dict[str, float]:
    """Class accuracy of `generated` w.r.t. the labels they were generated for, and the Frechet distance between
    the classifier features of `generated` and of `reference` (e.g. reconstructions of held-out real images)."""
    logits, features = classifier_outputs(model, generated)
    _, reference_features = classifier_outputs(model, reference)
    accuracy = (logits.argmax(dim=1) == generated_labels).float().mean().item()
    fd = frechet_distance(*feature_statistics(features), *feature_statistics(reference_features))
    return {"class_accuracy": accuracy, "classifier_fd": fd}
