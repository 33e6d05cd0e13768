"""Cheap ids stay unique across a fork."""

from __future__ import annotations

import os

from wallet.ids import correlation_id, new_uuid


def test_a_forked_process_draws_other_ids_than_its_parent():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then exit at once
        os.write(write, f"{new_uuid()} {correlation_id()}".encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode().split()
    os.waitpid(pid, 0)
    assert child[0] != str(new_uuid())
    assert child[1].split("-")[0] != correlation_id().split("-")[0]
