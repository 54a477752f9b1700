"""The CPU's instruction-set features that change what int8 and bf16 inference compute or cost.

    VNNI (avx512_vnni / avx_vnni)   int8 dot products summed in 32 bits; without it ONNX Runtime's u8 x s8
                                    kernels sum pairs in 16 bits with saturation (VPMADDUBSW)
    AVX-512 (avx512f)               wider kernels for fp32, bf16 and int8
    bf16 instructions (avx512_bf16) bf16 matrix products at about twice fp32 speed; emulated (slow) without
    AMX (amx_tile + amx_bf16/int8)  matrix tiles for bf16 and int8

Read from /proc/cpuinfo (Linux); elsewhere every feature is unknown (None).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True)
class CpuFeatures:
    model: str
    flags: frozenset[str] | None  # None: not known on this system

    def has(self, *names: str) -> bool | None:
        """Whether any of the flags is present (None if the flags are unknown)."""
        return None if self.flags is None else any(n in self.flags for n in names)

    @property
    def vnni(self) -> bool | None:
        return self.has("avx512_vnni", "avx_vnni")

    @property
    def avx512(self) -> bool | None:
        return self.has("avx512f")

    @property
    def bf16(self) -> bool | None:
        return self.has("avx512_bf16", "amx_bf16")

    @property
    def amx(self) -> bool | None:
        return self.has("amx_tile")

    def summary(self) -> str:
        """One line: `AMD EPYC: AVX2 yes, AVX-512 yes, VNNI yes, bf16 instructions yes, AMX no`."""
        def word(v: bool | None) -> str:
            return "unknown" if v is None else ("yes" if v else "no")

        return (f"{self.model}: AVX2 {word(self.has('avx2'))}, AVX-512 {word(self.avx512)}, VNNI {word(self.vnni)}, "
                f"bf16 instructions {word(self.bf16)}, AMX {word(self.amx)}")


def parse_cpuinfo(text: str) -> CpuFeatures:
    """CpuFeatures from /proc/cpuinfo's text (the first processor's `model name` and `flags`)."""
    model, flags = "unknown CPU", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip() or model
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return CpuFeatures(model, flags)


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        import platform

        return CpuFeatures(platform.processor() or "unknown CPU", None)
