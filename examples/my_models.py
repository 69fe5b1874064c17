"""A user's own classifier, for examples/families.toml's `module` source: any nn.Module works;
the spec names this factory as `my_models:make_net` (imported from the spec's folder)."""
from __future__ import annotations

from torch import nn


def make_net(num_classes: int = 2) -> nn.Module:
    """A small convolutional network with a `fc` head; untrained (the checkpoint holds the weights)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))
