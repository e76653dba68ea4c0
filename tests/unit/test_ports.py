"""free_port hands out ports Ray's own processes will not take between our check and Ray binding them."""

from __future__ import annotations

import socket

from operations import ports


def test_free_ports_are_distinct_bindable_and_outside_ray_and_ephemeral_ranges():
    drawn = [ports.free_port() for _ in range(50)]
    assert len(set(drawn)) == len(drawn)
    ephemeral_start = ports._ephemeral_start()
    for port in drawn:
        assert 20000 <= port < max(ephemeral_start, 21000)  # Ray's workers use 10002-19999
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_handed_out():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert not ports._is_free(busy.getsockname()[1])
