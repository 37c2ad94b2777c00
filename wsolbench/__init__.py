"""wsolbench: train, select and evaluate weakly-supervised object localization methods."""

__version__ = "0.1.0"
