"""Event ids: evt_ and 128 random bits, unique, and never repeated by a forked child."""

from __future__ import annotations

import os
import re

from fanout.api.publish import RandomIds


def test_ids_are_random_128_bit_hex_and_unique_across_pool_refills() -> None:
    ids = RandomIds()
    drawn = [ids() for _ in range(3 * RandomIds.POOL_BYTES // 16 + 5)]
    assert all(re.fullmatch(r"evt_[0-9a-f]{32}", i) for i in drawn)
    assert len(set(drawn)) == len(drawn)


def test_a_forked_child_does_not_repeat_the_parents_next_ids() -> None:
    ids = RandomIds()
    ids()  # the pool is filled in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, ids().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert child != ids() and re.fullmatch(r"evt_[0-9a-f]{32}", child)
