"""Int8 weights for decoding on the CPU: dynamic quantization of the model's linear layers.

``quantize(model, "int8")`` swaps every ``nn.Linear`` (attention projections, feed-forward, the
pointer-generator's query, key and gate) for torch's dynamically quantized one: int8 weights,
activations quantized on the fly per call, float in and out. What stays float32, by design:

- the embedding table, which is also the output projection (``Transformer.logits`` is
  ``F.linear(h, embed.weight)``, not an ``nn.Linear``): quantizing it would need a quantized copy
  beside the float table the embedding lookup reads, and the logits feed the copy mixture's
  ``log_softmax``, where the vocabulary's scores are compared with each other;
- layer norms, attention's softmax and the pointer's mixture (computed in float32 anyway).

Chosen when a model is loaded (``Translator.from_pretrained(..., quantize="int8")``,
``nmt generate --quantize int8``), like the device: it changes the weights, not the search, so it
is not a :class:`~nmt.decoding.settings.DecodeSettings` field. The kernels are CPU-only (fbgemm /
qnnpack): a model on another device is refused with a message saying to load it on the CPU.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from nmt.errors import ModelFileError

QUANTIZE_CHOICES = ("none", "int8")


def check_quantize(how: str) -> None:
    """Raise ValueError unless ``how`` is one of :data:`QUANTIZE_CHOICES`."""
    if how not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, got {how!r}")


def quantize(model: nn.Module, how: str) -> nn.Module:
    """``model`` with int8 linear layers (``how="int8"``), in place, or unchanged (``"none"``)."""
    check_quantize(how)
    if how == "none":
        return model
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ModelFileError(f"quantize 'int8' runs on the CPU only (torch's dynamic int8 kernels), but the model "
                             f"is on {device}: load it with --device cpu, or drop --quantize int8 on {device.type}")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization deprecated in favour of torchao (not a dependency
        # here); the eager API still works and is what we measure. The warnings say nothing the
        # user of `nmt generate --quantize int8` can act on, so they are silenced here only.
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
        return quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)


def quantized_linears(model: nn.Module) -> int:
    """How many of ``model``'s linear layers hold int8 weights."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return sum(isinstance(m, DynamicQuantizedLinear) for m in model.modules())
