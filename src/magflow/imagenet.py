"""ImageNet normalisation constants (RGB in [0, 1]): what timm ViTs and DINOv2 normalise with."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
