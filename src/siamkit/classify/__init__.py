"""The CIFAR-10 block-CNN classification study."""
