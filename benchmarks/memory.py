"""Peak-memory measurement for benchmarks (Linux): the peak RSS of one call, in a process of its own."""
from __future__ import annotations

import ctypes


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak() -> float:
    """Give freed heap back to the OS and reset the kernel's peak-RSS mark; returns the RSS now (MiB)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # VmHWM := VmRSS
    return status_mb("VmRSS")
