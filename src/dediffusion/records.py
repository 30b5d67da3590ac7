"""What every trained artifact records beside its weights: the machine it ran on and when."""

from __future__ import annotations

import datetime
import platform


def machine_summary() -> str:
    """One line: processor, OS, CPU and torch build."""
    import torch

    return f"{platform.machine()}, {platform.platform()}; {cpu_description()}; torch {torch.__version__}"


def cpu_description() -> str:
    """The CPU model and the vector units torch uses on it, e.g. 'AMD EPYC; AVX512, AVX512-BF16'.

    Recorded because training outcomes move with them: the same config and seed can train a different
    encoder on another CPU (docs/research.md)."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}; {', '.join([torch.backends.cpu.get_cpu_capability(), *cpu_bfloat16_units()])}"


def cpu_bfloat16_units() -> list[str]:
    """The CPU's bfloat16 hardware that torch detects: 'AVX512-BF16', 'AMX' (none: emulated)."""
    import torch

    checks = {"AVX512-BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}  # private torch helpers
    return [name for name, check in checks.items() if getattr(torch.cpu, check, lambda: False)()]


def utc_now() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
