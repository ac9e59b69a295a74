"""What the machine offers for bf16, and the choice `bf16="auto"` makes from it.

On a CPU, bf16 pays only where the instruction set has bf16 arithmetic: AMX (Intel Sapphire Rapids and
later: tile matrix units) or AVX512-BF16 (Intel Cooper Lake, AMD Zen 4 and later: bf16 dot products).
Elsewhere PyTorch emulates bf16 through fp32 conversions and autocast is slower than fp32. Measured with
`benchmarks/bench_bf16.py` (docs/results.md, "bf16 on CPU").

Read from /proc/cpuinfo (the kernel's flags, what `lscpu` prints); on other systems the flags are
unknown and "auto" keeps fp32 on the CPU.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class CpuBf16Support:
    amx_bf16: bool
    avx512_bf16: bool

    @property
    def fast(self) -> bool:
        """bf16 runs natively: AMX tiles or AVX512-BF16 dot products."""
        return self.amx_bf16 or self.avx512_bf16

    def describe(self) -> str:
        found = [name for name in BF16_CPU_FLAGS if getattr(self, name)]
        return ", ".join(found) if found else "no bf16 instructions (neither amx_bf16 nor avx512_bf16)"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them (empty where /proc/cpuinfo does not exist)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_bf16_support() -> CpuBf16Support:
    flags = cpu_flags()
    return CpuBf16Support(amx_bf16="amx_bf16" in flags, avx512_bf16="avx512_bf16" in flags)


def resolve_bf16(requested: bool | str, *, use_cpu: bool = False) -> bool:
    """`requested` as a bool: "auto" is True where the device that will train has fast bf16 (a CUDA GPU
    that supports it, or a CPU with AMX / AVX512-BF16), and the choice is logged with what was found."""
    if isinstance(requested, bool):
        return requested
    if not isinstance(requested, str) or requested.lower() not in ("auto", "true", "false"):
        raise ValueError(f'bf16 must be true, false or "auto", got {requested!r}')
    if requested.lower() != "auto":
        return requested.lower() == "true"
    if torch.cuda.is_available() and not use_cpu:
        chosen = torch.cuda.is_bf16_supported()
        logger.info("bf16='auto': %s on %s", "on" if chosen else "off", torch.cuda.get_device_name())
        return chosen
    support = cpu_bf16_support()
    logger.info(
        "bf16='auto' on the CPU: found %s, so bf16 is %s", support.describe(), "on" if support.fast else "off"
    )
    return support.fast
