"""What a benchmark prints about the machine it ran on: speed figures mean little without the CPU's name,
its vector instructions, torch's threads and the versions compared."""

import platform
from pathlib import Path

import torch
import transformers


def cpu_description() -> str:
    """The CPU's name, the vector extensions that decide which kernels run, and torch's threads."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
    shown = " ".join(flag for flag in wanted if flag in flags) or "none of " + " ".join(wanted)
    return f"{name}; {shown}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), " \
           f"{torch.get_num_threads()} threads, transformers {transformers.__version__}"
