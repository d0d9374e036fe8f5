"""Where networks run and at what precision: the one resolver every stage, `predict` and the
served model use.

A device is named as params and flags give it: `auto` (the first CUDA device if one is
visible, else the CPU), `cpu`, `cuda` or `cuda:N`. The choice is the params section's
(`train.device`, `flux.device`, `evaluate.device`), unless `RADIODIFF_DEVICE` is set (a
worker's own setting, so it wins), unless a command line flag gives one (`predict --device`).
Under torchrun every process takes its own GPU: `auto` and `cuda` become `cuda:$LOCAL_RANK`.

Torch-light: the spelling check and the precision vocabulary need no torch (config parses
params without it); resolving asks torch what the machine has.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ContextManager

from radiodiff.errors import UserError
from radiodiff.options import Precision

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "RADIODIFF_DEVICE"
AUTO = "auto"
_SPEC = re.compile(r"^(auto|cpu|cuda(:(0|[1-9][0-9]*))?)$")


def check_device_spec(spec: str, where: str = "device") -> str:
    """`spec` if it spells a device (`auto`, `cpu`, `cuda`, `cuda:N`), else a one-line UserError."""
    if not isinstance(spec, str) or not _SPEC.match(spec):
        raise UserError(f"{where}: {spec!r} is not a device; use auto, cpu, cuda or cuda:N")
    return spec


def requested_device(configured: str = AUTO, override: str | None = None,
                     environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """The device spec that applies and where it came from: `override` (a flag), else
    `RADIODIFF_DEVICE`, else `configured` (the params section). Checked, not resolved."""
    environ = os.environ if environ is None else environ
    if override:
        return check_device_spec(override, "--device"), "--device"
    if environ.get(DEVICE_ENV):
        return check_device_spec(environ[DEVICE_ENV], DEVICE_ENV), DEVICE_ENV
    return check_device_spec(configured), "params"


def resolve_device(configured: str = AUTO, override: str | None = None, *,
                   environ: Mapping[str, str] | None = None, cuda_count: int | None = None) -> torch.device:
    """The torch device to build and load networks on (see the module docstring).

    `cuda_count` stands in for `torch.cuda.device_count()` (tests). A CUDA device that is
    not there is a UserError, one line: asking for `cuda` on a CPU machine is the user's to fix.
    """
    import torch

    environ = os.environ if environ is None else environ
    spec, source = requested_device(configured, override, environ)
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    local_rank = environ.get("LOCAL_RANK")
    if spec == "cpu" or (spec == AUTO and count == 0):
        return torch.device("cpu")
    if count == 0:
        raise UserError(f"{source} asks for {spec}, but no CUDA device is visible")
    if spec in (AUTO, "cuda"):
        index = int(local_rank) if local_rank is not None else 0
    else:
        index = int(spec.split(":")[1])
        if local_rank is not None and int(environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            raise UserError(f"{source} names one GPU ({spec}), but this run has several processes: "
                            "use cuda or auto, and each process takes the GPU of its rank")
    if index >= count:
        raise UserError(f"{source} asks for cuda:{index}, but {_count_words(count)} visible")
    return torch.device("cuda", index)


def check_device_count(devices: int, configured: str = AUTO, *, where: str = "train",
                       environ: Mapping[str, str] | None = None, cuda_count: int | None = None) -> None:
    """Refuse, before torchrun starts any process, a run over more GPUs than are visible.
    CPU runs (`cpu`, or `auto` without CUDA) may start any number of processes."""
    import torch

    spec, _ = requested_device(configured, None, environ)
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    on_cuda = spec.startswith("cuda") or (spec == AUTO and count > 0)
    if on_cuda and devices > 1 and spec.startswith("cuda:"):
        raise UserError(f"{where}.devices is {devices} but {where}.device names one GPU ({spec}): use cuda or auto")
    if on_cuda and devices > count:
        raise UserError(f"train.devices is {devices} but {_count_words(count)} visible ({where})")


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """The precision that applies on `device`. `auto` is bf16 where the hardware computes it:
    a CUDA device that supports it, or a CPU with native bf16 instructions (AVX512-BF16 or AMX);
    fp32 elsewhere. Measured on the project's 2-core CPUs, a default-profile VAE training step:
    bf16 1.7x faster than fp32 with AVX512-BF16, 12x slower without it (emulated). fp16 needs
    CUDA: on a CPU it is a UserError."""
    import torch

    if precision is Precision.AUTO:
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        return Precision.BF16 if native else Precision.FP32
    if precision is Precision.FP16 and device.type != "cuda":
        raise UserError(f"precision fp16 needs a CUDA device (this run is on {device}); use fp32 or bf16")
    return precision


def autocast(device: torch.device, precision: Precision) -> ContextManager:
    """The autocast context of a resolved precision on `device` (fp32: none)."""
    import torch

    if precision is Precision.FP32:
        return contextlib.nullcontext()
    if precision is Precision.AUTO:
        raise ValueError("resolve the precision first (resolve_precision)")
    dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
    if not torch.amp.is_autocast_available(device.type):
        warnings.warn(f"autocast is not available on {device}; running in float32", stacklevel=2)
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def use_tf32(device: torch.device) -> None:
    """Let float32 matmuls and convolutions on CUDA use TF32 tensor cores (no-op elsewhere)."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def to_device(value: Any, device: torch.device, non_blocking: bool = True, channels_last: bool = False) -> Any:
    """`value` with every tensor in it (also inside dicts, lists, tuples, named tuples) on
    `device`, 4-D ones in NHWC order with `channels_last`; other values unchanged.
    Non-blocking copies overlap a pinned host batch's copy with the work already queued."""
    import torch

    if isinstance(value, torch.Tensor):
        layout = torch.channels_last if channels_last and value.dim() == 4 else torch.preserve_format
        return value.to(device, non_blocking=non_blocking, memory_format=layout)
    if isinstance(value, dict):
        return {key: to_device(item, device, non_blocking, channels_last) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(to_device(item, device, non_blocking, channels_last) for item in value))
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(item, device, non_blocking, channels_last) for item in value)
    return value


def module_device(module: Any) -> torch.device:
    """The device of a network's first parameter."""
    return next(module.parameters()).device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA timing that skips this times the launch only)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """A person's name for `device`: the GPU's model, or `cpu (<processor>)`."""
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    processor = _cpu_model() or platform.processor() or platform.machine()
    return f"cpu ({processor})"


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak memory the caching allocator has held on a CUDA device since the last reset, GiB."""
    import torch

    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (flags avx512_bf16 or amx_bf16 of /proc/cpuinfo)."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _count_words(count: int) -> str:
    return f"{count} CUDA device{'' if count == 1 else 's'} {'is' if count == 1 else 'are'}"
