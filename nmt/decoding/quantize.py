"""Int8 weights for decoding on the CPU: dynamic quantization of the model's linear layers.

``quantize(model, "int8")`` swaps every ``nn.Linear`` (attention projections, feed-forward, the
pointer-generator's query, key and gate) for torch's dynamically quantized one: int8 weights,
activations quantized on the fly per call, float in and out. The output projection, which
training ties to the embedding table (``Transformer.logits`` is ``F.linear(h, embed.weight)``),
gets an int8 copy of the table as ``model.output_projection``, quantized per row (per output
token) rather than per tensor: the logits are compared across the vocabulary, and one scale for
every row would let the rows of largest norm set the precision of all. With the other layers
int8, that float32 product had become the largest single operator of an int8 beam search (11 %
of it, ``results/profiles.json``). What stays float32: the embedding lookup (the table itself),
layer norms, attention's softmax and the pointer's mixture (computed in float32 anyway).

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
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    if getattr(model, "embed", None) is not None and hasattr(model, "output_projection"):
        table = model.embed.weight  # (V, D)
        projection = nn.Linear(table.size(1), table.size(0), bias=False)
        with torch.no_grad():
            projection.weight.copy_(table)
        model.output_projection = projection
    with warnings.catch_warnings():
        # torch 2.13 marks torch.ao.quantization deprecated in favour of torchao (not a dependency
        # here); the eager API still works and is what we measure. The warnings say nothing the
        # user of `nmt generate --quantize int8` can act on, so they are silenced here only.
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_(tensor|channel)")
        qconfigs = {nn.Linear: default_dynamic_qconfig, "output_projection": per_channel_dynamic_qconfig}
        return quantize_dynamic(model.eval(), qconfigs, dtype=torch.qint8, inplace=True)


def quantized_linears(model: nn.Module) -> int:
    """How many of ``model``'s linear layers hold int8 weights."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return sum(isinstance(m, DynamicQuantizedLinear) for m in model.modules())
