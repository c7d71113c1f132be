"""A user-space link emulator (kernel netem is not available here): named link profiles,
CSV traces of a changing link, and an asyncio TCP proxy that applies them.

``from splitasr.netem import EmulatorThread, PROFILES``; ``with EmulatorThread(target=(host,
port), profile=PROFILES["lte"]) as em:`` connect to ``127.0.0.1:em.port``. See docs/transport.md.
"""

from splitasr.netem.profiles import PROFILES, LinkProfile, available_profiles, get_profile
from splitasr.netem.proxy import ConnectionStats, EmulatorThread, LinkEmulator, LinkStats
from splitasr.netem.trace import Trace, TraceError, TraceRow, load_trace, parse_trace, shipped_trace

__all__ = [
    "PROFILES",
    "ConnectionStats",
    "EmulatorThread",
    "LinkEmulator",
    "LinkProfile",
    "LinkStats",
    "Trace",
    "TraceError",
    "TraceRow",
    "available_profiles",
    "get_profile",
    "load_trace",
    "parse_trace",
    "shipped_trace",
]
