"""Mixed precision for the training step: the autocast dtype, and fp16's loss scaling.

``train.precision`` sets the dtype the forward pass and the loss run in (``torch.autocast``).
Weights, gradients and AdamW's moments stay float32 (the master weights), so the checkpoint,
the EMA and dev evaluation see float32 weights whatever the setting.

- ``auto``: bf16 on a GPU with native bf16 (Ampere and later), else fp16; fp32 on the CPU, where
  only some chips have fast bf16 matrix units (ask for ``bf16`` there explicitly).
- ``fp16``: its 5-bit exponent underflows small gradients, so a :class:`torch.amp.GradScaler`
  multiplies the loss before backward and divides the gradients after. When they overflow, the
  scaler skips that update and halves its scale: a normal event (several in a run's first steps
  while the scale settles), not a sign of divergence. GPU only: on the CPU, training runs in fp32
  or bf16.
- ``bf16`` has fp32's exponent range: no scaling needed.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from nmt.errors import NmtError

DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU multiplies bf16 natively (x86 ``avx512_bf16``/``amx_bf16``, ARM ``bf16``), from
    the kernel's CPU flags; None where they cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags = {word for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
             for word in line.split(":", 1)[-1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


class PrecisionError(NmtError):
    """``train.precision`` asks for something the training device cannot do."""


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``train.precision`` means on ``device``; None = plain float32, no autocast."""
    if name == "auto":
        if device.type != "cuda":
            return None
        # including_emulation=False: a GPU that only emulates bf16 is slower in it than in fp16.
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        if device.type != "cuda":
            raise PrecisionError(f"train.precision is 'fp16', but training runs on the {device.type}: fp16 with "
                                 f"loss scaling needs a CUDA GPU; set train.precision to auto, fp32 or bf16 "
                                 f"(bf16 runs on the CPU)")
        return torch.float16
    raise PrecisionError(f"train.precision: unknown value {name!r} (auto, fp32, bf16 or fp16)")


@dataclass
class Precision:
    """How the training step runs: its autocast dtype and, for fp16, the GradScaler."""

    dtype: torch.dtype | None = None  # autocast's; None = float32
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = None  # fp16 only

    @classmethod
    def of(cls, name: str, device: torch.device) -> Precision:
        """``train.precision`` on ``device`` (raises :class:`PrecisionError` when it cannot run there).

        bf16 on a CPU without bf16 matrix instructions runs, emulated and slower than float32: a
        warning says so rather than an error, since the results are the same."""
        dtype = resolve_precision(name, device)
        if dtype == torch.bfloat16 and device.type == "cpu" and cpu_has_bf16() is False:
            print("warning: train.precision is 'bf16', but this CPU has no bf16 matrix instructions (avx512_bf16, "
                  "amx_bf16 or ARM bf16): bf16 is emulated and likely slower than float32; set train.precision: "
                  "fp32 (-S train.precision=fp32) unless you want the same numbers as a bf16 CPU", file=sys.stderr)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(dtype, device.type, scaler)

    @property
    def name(self) -> str:
        return DTYPE_NAMES[self.dtype]

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the step's matmuls run in: what its peak FLOP/s must be measured in."""
        return self.dtype or torch.float32

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else nullcontext()

    def state_dict(self) -> dict | None:
        """The scaler's scale and growth counter (plain numbers: the resume checkpoint loads weights_only)."""
        return self.scaler.state_dict() if self.scaler else None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore :meth:`state_dict`; a checkpoint from a run without a scaler leaves it at its start."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


FP32 = Precision()  # plain float32: no autocast, no scaler


def enable_tf32() -> None:
    """Let float32 matmuls and convolutions use TF32 tensor cores (CUDA).

    Several times the FLOP/s of full fp32 for a 10-bit mantissa, which training tolerates: it is
    what the fp32 setting, and the ops autocast keeps in fp32, run in on a GPU. Deterministic,
    so ``torch.use_deterministic_algorithms`` is unaffected.
    """
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
