"""siamkit: Siamese networks and deep metric learning on images."""

__version__ = "0.1.0"
