"""Backbones built from one conv factory, and their registry."""
from .common import Backbone
from .conv4 import Conv4
from .registry import create_backbone, list_backbones, register_backbone
from .resnet import ResNet
from .vgg import VGG
from .wrn import WideResNet

__all__ = ["Backbone", "Conv4", "ResNet", "VGG", "WideResNet",
           "create_backbone", "list_backbones", "register_backbone"]
