"""Modules with parameters and hand-written backward passes."""
from .layers import (Activation, Add, AveragePooling2D, BatchNorm, ChannelScale, Concatenate, Conv2D, DepthwiseConv2D, Dropout,
                     GlobalAveragePooling2D, GroupedDepthwiseConv2D, LeakyReLU, MaxPool2D, OpLayer, ReLU, Resize, Split,
                     SqueezeExcite, StochasticDepth, UpSampling2D, ZeroPadding2D, sum_gradients)
from .module import Module, Sequential, inference_mode
from .inference_plan import InferencePlan, StalePlanError, inference_plan

__all__ = ["Module", "Sequential", "inference_mode", "Conv2D", "DepthwiseConv2D", "BatchNorm", "ReLU", "ZeroPadding2D",
           "MaxPool2D", "GlobalAveragePooling2D", "Resize", "UpSampling2D", "Dropout", "Concatenate",
           "Add", "sum_gradients", "OpLayer", "Activation", "GroupedDepthwiseConv2D", "ChannelScale", "SqueezeExcite",
           "StochasticDepth", "AveragePooling2D", "LeakyReLU", "Split", "InferencePlan", "inference_plan",
           "StalePlanError"]
