"""Device, link and edge-server classes from documented hardware and network figures.

Each class holds a range (low, high) for every quantity the latency model needs, and the source it
comes from, with the arithmetic (docs/fleets.md has the table and the sources' addresses). A device
drawn from a (device class, link class) pair takes each quantity log-uniformly from its class's
range with a seeded generator (:func:`~hasfl_sec.fleet.compose.compose_fleet`), so devices of one
class differ as real units do, within the documented spread. How we turned sources into ranges:

* **Compute** is *sustained fp32 training throughput*, not a datasheet peak or an NPU figure:
  training runs on the CPU (the GPU for Jetson modules and edge servers) through a framework, and
  reaches a fraction of peak. Peak = cores x clock x fp32 FLOP per cycle per core (2 for a scalar
  FMA unit, 8 for one 128-bit NEON FMA pipe, 16 for two, 32 for two 256-bit AVX2 FMA pipes). The
  sustained range rests on measured training throughput where we found one (Raspberry Pi 4/5 in
  PyTorch, Snapdragon 8-series phones in MNN) and is our estimate, said so, where we did not.
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


# Device classes. Peak = cores x clock x fp32 FLOP/cycle/core; the sustained range comes from the
# measurements named in each source (docs/fleets.md lists them with their addresses).
_device("mcu", (0.05e9, 0.3e9), (0.25 * MB, 1.0 * MB),
        "Cortex-M7 microcontroller (STM32H7 at 480 MHz, i.MX RT1060 at 600 MHz): one single-precision FMA per "
        "cycle = 2 FLOP/cycle = 0.96-1.2 GFLOP/s peak, 5-25% sustained in training loops (our estimate); a "
        "Cortex-M4F at 168-180 MHz (about 1 FLOP/cycle, 0.18 GFLOP/s peak) only reaches the bottom of the range. "
        "0.5-1 MB SRAM, 0.25-1 MB of it for training (Lin et al., On-Device Training Under 256KB Memory, "
        "NeurIPS 2022, fit training into 256 KB on a Cortex-M7).")
_device("raspberry-pi", (3e9, 30e9), (1 * GB, 4 * GB),
        "Raspberry Pi 4 (4x Cortex-A72 at 1.5-1.8 GHz, one 128-bit NEON FMA pipe = 8 FLOP/cycle: 48-58 GFLOP/s "
        "peak) to Pi 5 (4x Cortex-A76 at 2.4 GHz, two pipes = 16 FLOP/cycle: 154 GFLOP/s peak). Measured PyTorch "
        "training, batch 16 at 224x224 (Flower Labs, federated-embedded-vision, 2023): a Pi 4 trains ResNet-18 "
        "at 10.9 s/batch = 16 x 1.8 GMAC x 6 FLOP/MAC / 10.9 s = 16 GFLOP/s, ResNet-50 at 12 GFLOP/s, "
        "depthwise nets (MobileNet) at 1-4 GFLOP/s, and a Pi 5 is about 2x a Pi 4: 3-30 GFLOP/s. "
        "2-8 GB RAM, 1-4 GB for training.")
_device("phone-low", (1e9, 4e9), (0.5 * GB, 1.5 * GB),
        "Low-end phone SoC (8x in-order Cortex-A53/A55 at 1.6-2.0 GHz, 4-8 FLOP/cycle: 51-128 GFLOP/s peak). No "
        "training measurement found for this class: 1-4 GFLOP/s is our estimate, a quarter of the phone-mid range "
        "and below a Pi 4's measured CNN figures (in-order cores, a narrow NEON datapath, one memory channel, "
        "thermal throttling under sustained load). 3-4 GB RAM, 0.5-1.5 GB for an app.")
_device("phone-mid", (4e9, 15e9), (1 * GB, 3 * GB),
        "Mid-range phone SoC (2x Cortex-A76/A78 at 2.2-2.4 GHz, 16 FLOP/cycle: 70-77 GFLOP/s peak, + 6x A55). "
        "About half the phone-high measurement (two big cores where flagships have four), down to 4 GFLOP/s for "
        "throttled or older units. 6-8 GB RAM, 1-3 GB for an app.")
_device("phone-high", (15e9, 50e9), (2 * GB, 6 * GB),
        "Flagship phone SoC, training on the CPU (NPUs do not train). Measured: 15-30 GFLOP/s for MNN's CPU "
        "training kernels on Snapdragon 8-series phones (Das et al., Enabling On-Device Smartphone GPU based "
        "Training, arXiv 2202.10100, 2022) -- about 7-15% of their ~200 GFLOP/s peak (4x A76/A77 at "
        "2.4-2.8 GHz x 16 FLOP/cycle = 160, + 4x A55). Newer Cortex-X3/X4 parts (32 FLOP/cycle at 3.2-3.3 GHz) raise "
        "the top to about 50 (our extrapolation). 8-16 GB RAM, 2-6 GB for an app.")
_device("jetson", (70e9, 600e9), (2 * GB, 6 * GB),
        "NVIDIA Jetson Nano (128 Maxwell CUDA cores x 0.92 GHz x 2 = 236 GFLOP/s fp32 peak) to Orin Nano (1024 "
        "Ampere cores x 0.625 GHz x 2 = 1.28 TFLOP/s fp32 peak; the 2024 Super clocks, 2.1, are not covered), "
        "30-50% sustained in cuDNN training on the GPU (our estimate). 4-8 GB shared memory, 2-6 GB for training.")
_device("laptop", (50e9, 200e9), (4 * GB, 16 * GB),
        "Laptop CPU (4-8 x86 cores at 2.5-3.5 GHz, two 256-bit AVX2 FMA pipes = 32 FLOP/cycle: 0.3-0.9 TFLOP/s "
        "peak), 10-25% sustained in PyTorch CPU training (our estimate; the Pi 4 measurements above span 2-33% of "
        "peak across CNN families). 8-32 GB RAM, 4-16 GB for training.")

# Link classes: achieved application throughput, each direction.
_link("nb-iot", (10e3, 60e3), (10e3, 60e3),
      "3GPP TS 36.306 categories on one 180 kHz carrier: Cat-NB1 peaks at 227 kbit/s PHY down / 250 up, but "
      "one HARQ process and scheduling gaps leave about a tenth of that, 20-25 kbit/s each way (Anritsu, "
      "Determining Peak Data Rates for NB-IoT); Cat-NB2 (MAC peaks 127 down / 159 up) reaches 2-3x more; "
      "repetitions at the cell edge divide it.")
_link("lora", (0.25e3, 5.47e3), (0.25e3, 5.47e3),
      "LoRaWAN at 125 kHz, DR0-DR5 = SF12-SF7: 0.25-5.47 kbit/s each way (LoRaWAN Regional Parameters, EU868), "
      "before the 1% duty-cycle limit.")
_link("ble", (0.2e6, 1.4e6), (0.2e6, 1.4e6),
      "Bluetooth Low Energy application throughput, well below the 1 and 2 Mbit/s PHY rates (headers, "
      "inter-frame spaces, connection events): at best about 0.7-0.8 Mbit/s on the 1M PHY with data length "
      "extension and 1.3-1.4 Mbit/s on the Bluetooth 5 2M PHY between two nRF52 boards (Nordic's ATT_MTU "
      "throughput example; Novel Bits, Bluetooth 5 speed); phones' connection intervals bring it down to about "
      "0.2 Mbit/s (our lower bound).")
_link("lte", (3e6, 15e6), (10e6, 50e6),
      "LTE (4G) achieved throughput: OpenSignal's State of LTE (2016) measured a 17.4 Mbit/s global average "
      "download, most countries 20-25, the best above 40 and India 6.4; Ookla measured a 27 Mbit/s down, "
      "8.6 Mbit/s up mobile mean in the U.S. (H1 2018). Range: 10-50 down, 3-15 up.")
_link("5g", (15e6, 60e6), (100e6, 400e6),
      "5G sub-6 GHz: Ookla Speedtest Intelligence global 5G medians were 166 Mbit/s down and 21 Mbit/s up "
      "(Q3 2021) and 203 Mbit/s down (Q3 2023); country medians range about 100-400 down, 15-60 up.")
_link("wifi", (20e6, 150e6), (30e6, 300e6),
      "Wi-Fi 802.11n/ac/ax to an access point on the edge server's LAN: IP throughput is at best about 60% of "
      "the PHY rate (half-duplex, contention, ACKs) -- 90 Mbit/s for 1x1 802.11n at 150, 500 for 2x2 802.11ac "
      "at 867 -- and falls with distance and walls; 30-300 Mbit/s down, 20-150 up (our derating).")

_server("edge-gpu", 4e12,
        "Edge server with one NVIDIA T4 (2560 CUDA cores x 1.59 GHz x 2 = 8.1 TFLOP/s fp32 peak) at about 50% "
        "sustained in training (our estimate; an A2, 4.5 TFLOP/s peak, would give about 2).")
_server("edge-cpu", 0.6e12,
        "Two-socket x86 edge server (32 cores at 2.5 GHz, AVX2 FMA = 32 FLOP/cycle: 2.6 TFLOP/s peak) at about "
        "25% sustained (our estimate).")
