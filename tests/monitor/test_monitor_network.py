"""The monitor's network figures for a run reading remote shards (pure functions, no app)."""

from __future__ import annotations

from types import SimpleNamespace

from streamtok_monitor import snapshot
from streamtok_monitor.panels import network_line

from streamtok.metrics import publish as metrics


def _slot(i, role, pid, **net):
    base = {"slot": i, "role": role, "pid": pid, "net_requests": 0, "net_bytes": 0, "net_retries": 0,
            "net_in_flight": 0, "net_wait_ns": 0, "cache_hits": 0, "cache_bytes": 0}
    return {**base, **net}


def test_rates_and_the_loops_share_on_the_network():
    cls = snapshot.Sampler
    prev = [_slot(0, metrics.ROLE_TRAINER, 1), _slot(1, metrics.ROLE_WORKER, 2, net_requests=10, net_bytes=1000)]
    now = [_slot(0, metrics.ROLE_TRAINER, 1),
           _slot(1, metrics.ROLE_WORKER, 2, net_requests=110, net_bytes=201_000, net_wait_ns=500_000_000,
                 net_in_flight=7, net_retries=2, cache_hits=40, cache_bytes=3 << 20)]
    state = SimpleNamespace(_prev_t=1.0, _prev_slots={s["slot"]: s for s in prev})
    net = cls._network(state, now, 2.0, 0.5)
    assert net["requests_per_s"] == 50 and net["bytes_per_s"] == 100_000
    assert (net["in_flight"], net["retries"], net["cache_hits"], net["cache_bytes"]) == (7, 2, 40, 3 << 20)
    # the worker was blocked on the store a quarter of the time; the loop waited half of it
    assert abs(net["wait_fraction"] - 0.125) < 1e-9
    assert cls._network(state, prev[:1], 2.0, 0.5) is None  # nothing remote: no figures
    text = network_line(net)
    assert "50 req/s" in text and "7 in flight" in text and "2 retries" in text and "40 hits" in text, text
    assert text.endswith("on network 12.5% of the loop")
