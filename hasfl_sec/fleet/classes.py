"""Device, link and edge-server classes from documented hardware and network figures.

Each class holds a range (low, high) for every quantity the latency model needs, and the source it
comes from, with the arithmetic (docs/fleets.md has the table). A device drawn from a (device class,
link class) pair takes each quantity log-uniformly from its class's range with a seeded generator
(:func:`draw_devices`), so devices of one class differ as real units do, within the documented
spread. How we turned sources into ranges:

* **Compute** is *sustained fp32 training throughput*, not a datasheet peak or an NPU figure:
  training runs on the CPU (the GPU for Jetson modules and edge servers) through a framework, and
  reaches a fraction of peak. Peak = cores x clock x fp32 FLOP per cycle per core (2 for a scalar
  FMA unit, 8 for one 128-bit NEON FMA pipe, 32 for two 256-bit AVX2 FMA pipes); the sustained
  fraction is 10-30% on CPUs and 30-50% on GPUs (our choice, stated per class; the measured
  on-device training throughputs in the MCU and mobile training literature fall in these bands).
* **Memory** is what a training process can use, not the device's total RAM.
* **Links** are achieved application throughput (median measurements where they exist, peak
  rates derated where they do not), each direction separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry

__all__ = ["Range", "DeviceClass", "LinkClass", "ServerClass", "DEVICE_CLASSES", "LINK_CLASSES",
           "SERVER_CLASSES", "MB", "GB"]

Range = tuple[float, float]
MB = 1e6
GB = 1e9


@dataclass(frozen=True)
class DeviceClass:
    """An edge-device class: sustained training FLOP/s and training memory (bytes) ranges, and
    where they come from."""

    name: str
    flops: Range
    memory_bytes: Range
    source: str


@dataclass(frozen=True)
class LinkClass:
    """A network link class: achieved uplink and downlink rates (bit/s) and their source."""

    name: str
    uplink_bps: Range
    downlink_bps: Range
    source: str


@dataclass(frozen=True)
class ServerClass:
    """An edge-server class: sustained training FLOP/s and its source."""

    name: str
    flops: float
    source: str


DEVICE_CLASSES: Registry[DeviceClass] = Registry("device class", "fleet.compose[].device")
LINK_CLASSES: Registry[LinkClass] = Registry("link class", "fleet.compose[].link")
SERVER_CLASSES: Registry[ServerClass] = Registry("server class", "fleet.server")


def _device(name: str, flops: Range, memory: Range, source: str) -> None:
    DEVICE_CLASSES.register(name, help=f"{flops[0] / 1e9:g}-{flops[1] / 1e9:g} GFLOP/s sustained, "
                                       f"{_bytes(memory[0])}-{_bytes(memory[1])} for training. {source}")(
        DeviceClass(name, flops, memory, source))


def _link(name: str, up: Range, down: Range, source: str) -> None:
    LINK_CLASSES.register(name, help=f"up {_rate(up[0])}-{_rate(up[1])}, down {_rate(down[0])}-{_rate(down[1])}. "
                                     f"{source}")(LinkClass(name, up, down, source))


def _server(name: str, flops: float, source: str) -> None:
    SERVER_CLASSES.register(name, help=f"{flops / 1e12:g} TFLOP/s sustained. {source}")(
        ServerClass(name, flops, source))


def _bytes(x: float) -> str:
    return f"{x / GB:g} GB" if x >= GB else f"{x / MB:g} MB"


def _rate(x: float) -> str:
    return f"{x / 1e6:g} Mbit/s" if x >= 1e6 else f"{x / 1e3:g} kbit/s"


_device("mcu", (0.05e9, 0.3e9), (0.25 * MB, 1.0 * MB),
        "Cortex-M7 microcontroller (STM32H7 at 480 MHz, i.MX RT1060 at 600 MHz): one single-precision FMA unit, "
        "2 FLOP/cycle = 0.96-1.2 GFLOP/s peak, 5-25% sustained in training kernels; 0.5-1 MB SRAM of which "
        "0.25-1 MB for training (Lin et al., On-Device Training Under 256KB Memory, NeurIPS 2022, train in 256 KB).")
_device("raspberry-pi", (3e9, 12e9), (1 * GB, 4 * GB),
        "Raspberry Pi 4 (4x Cortex-A72 at 1.5 GHz, 8 FLOP/cycle NEON FMA: 48 GFLOP/s peak) to Pi 5 (4x Cortex-A76 "
        "at 2.4 GHz: 77 GFLOP/s peak); 6-15% sustained in PyTorch CPU training; 2-8 GB RAM, 1-4 GB for training.")
_device("phone-low", (1e9, 4e9), (0.5 * GB, 1.5 * GB),
        "Low-end phone SoC (8x Cortex-A53/A55 at 1.6-2.0 GHz, 2 FLOP/cycle/lane NEON: 13-32 GFLOP/s peak), "
        "about 10% sustained under thermal limits; 3-4 GB RAM, 0.5-1.5 GB for an app.")
_device("phone-mid", (4e9, 15e9), (1 * GB, 3 * GB),
        "Mid-range phone SoC (2x Cortex-A76/A78 at 2.2-2.4 GHz + 6x A55: about 50-80 GFLOP/s peak), 8-20% sustained "
        "on the CPU; 6-8 GB RAM, 1-3 GB for an app.")
_device("phone-high", (15e9, 50e9), (2 * GB, 6 * GB),
        "Flagship phone SoC (Cortex-X3/X4 at 3.2-3.3 GHz + A715/A720 cores: about 150-200 GFLOP/s peak), 10-25% "
        "sustained on the CPU (NPUs do not train); 8-16 GB RAM, 2-6 GB for an app.")
_device("jetson", (70e9, 600e9), (2 * GB, 6 * GB),
        "NVIDIA Jetson Nano (128 Maxwell CUDA cores, 236 GFLOP/s fp32 peak) to Orin Nano (1024 Ampere cores, "
        "1.28 TFLOP/s fp32 peak), 30-50% sustained training on the GPU; 4-8 GB shared memory, 2-6 GB for training.")
_device("laptop", (50e9, 200e9), (4 * GB, 16 * GB),
        "Laptop CPU (4-8 x86 cores at 2.5-3.5 GHz, two 256-bit AVX2 FMA pipes = 32 FLOP/cycle: 0.3-0.9 TFLOP/s "
        "peak), 10-25% sustained in PyTorch CPU training; 8-32 GB RAM, 4-16 GB for training.")

_link("nb-iot", (15e3, 60e3), (10e3, 30e3),
      "3GPP Cat-NB1/NB2 (TS 36.306): one 180 kHz carrier, QPSK, peak 26-127 kbit/s down and up to about 250 kbit/s "
      "up multi-tone; achieved rates are about a tenth of peak (scheduling, one HARQ process, repetitions).")
_link("lora", (0.3e3, 5.5e3), (0.3e3, 5.5e3),
      "LoRaWAN at 125 kHz, DR0-DR5 = SF12-SF7: 0.25-5.47 kbit/s each way (LoRaWAN Regional Parameters, EU868), "
      "before duty-cycle limits.")
_link("ble", (0.2e6, 1.4e6), (0.2e6, 1.4e6),
      "Bluetooth Low Energy: 4.2 with data length extension about 0.8 Mbit/s application throughput, 5.x on the "
      "2M PHY about 1.4 Mbit/s; phones and boards typically reach 0.2-1.4 Mbit/s.")
_link("lte", (3e6, 15e6), (10e6, 50e6),
      "LTE (4G) achieved throughput: Ookla Speedtest Intelligence medians of 4G are 10-50 Mbit/s down and "
      "3-15 Mbit/s up across countries.")
_link("5g", (15e6, 60e6), (100e6, 400e6),
      "5G sub-6 GHz (NSA): Ookla's global 5G median was 166 Mbit/s down and 21 Mbit/s up (Q3 2021); "
      "country medians range about 100-400 down, 15-60 up.")
_link("wifi", (20e6, 150e6), (30e6, 300e6),
      "Wi-Fi 802.11n/ac/ax at home and office distances: 30-300 Mbit/s achieved down, 20-150 Mbit/s up (well "
      "below PHY rates of 150-1200 Mbit/s: contention, distance, walls).")

_server("edge-gpu", 4e12,
        "Edge server with one NVIDIA T4 (8.1 TFLOP/s fp32 peak) at about 50% sustained in training.")
_server("edge-cpu", 0.6e12,
        "Two-socket x86 edge server (32 cores at 2.5 GHz, AVX2 FMA: 2.6 TFLOP/s peak) at about 25% sustained.")
