"""Live VM stats: one bulk ``getAllDomainStats`` per host, rates in a short ring per VM.

sample.py turns records into counters and rates, ring.py keeps them per host, poll.py
decides when a host is read. Nothing here imports textual or rich.
"""

from catkeeper.backend.stats.poll import fold_sampler, folded, read_stats, sample_now, start_polling
from catkeeper.backend.stats.ring import RING, FleetStats, HostStats
from catkeeper.backend.stats.sample import STATS_GROUPS, Counters, Rates, counters, rates

__all__ = [
    "RING",
    "STATS_GROUPS",
    "Counters",
    "FleetStats",
    "HostStats",
    "Rates",
    "counters",
    "fold_sampler",
    "folded",
    "rates",
    "read_stats",
    "sample_now",
    "start_polling",
]
