"""Connection counts shared by the processes that accept on one DIMSE port, in shared memory.

Each process writes only its own row and reads everyone's, so no lock crosses processes; two
processes accepting at the same instant may each see the other's count one step late, which
lets a limit overshoot by a connection, never more. A worker that dies leaves its row behind;
its replacement clears the row when it takes the slot (:meth:`LoadSlot.reset`).

What the counts are for:

* **load balancing**: a process busier than another leaves a waiting connection a moment for
  the less busy one (``DimseServer._accept_loop``);
* ``dicom.max_associations``: established associations over all processes;
* ``dicom.max_associations_per_host``: connections from one IP address over all processes,
  counted in :data:`HOST_BUCKETS` buckets by a hash of the address (two hosts sharing a bucket
  share its limit; with 1,024 buckets and a few dozen peers that is rare and only stricter).
"""

from __future__ import annotations

import multiprocessing
import zlib
from typing import Any

#: Buckets of the per-host connection counts.
HOST_BUCKETS = 1024


def host_bucket(address: str) -> int:
    """The bucket of an IP address (the same in every process, unlike ``hash``)."""
    return zlib.crc32(address.encode("ascii", "replace")) % HOST_BUCKETS


class LoadSlot:
    """One process's entry on a :class:`LoadBoard`."""

    def __init__(self, board: LoadBoard, index: int) -> None:
        self.board = board
        self.index = index

    @property
    def counts(self) -> Any:
        return self.board.counts

    def reset(self) -> None:
        """Clear this process's row (a new process taking a dead one's slot)."""
        self.board.counts[self.index] = LoadBoard.GONE
        self.board.established[self.index] = 0
        start = self.index * HOST_BUCKETS
        self.board.hosts[start : start + HOST_BUCKETS] = [0] * HOST_BUCKETS

    def publish(self, active: int) -> None:
        """Record this process's number of connections (for load balancing)."""
        self.board.counts[self.index] = active

    def leave(self) -> None:
        """This process stops accepting: never count it as the least busy."""
        self.board.counts[self.index] = LoadBoard.GONE

    def busier_than_another(self) -> bool:
        counts = self.board.counts
        mine = counts[self.index]
        return any(other < mine for other in counts)

    def set_established(self, count: int) -> None:
        self.board.established[self.index] = count

    def established_total(self) -> int:
        """Established associations over all processes."""
        return int(sum(self.board.established))

    def add_host(self, bucket: int, delta: int) -> None:
        """Count a connection from a host in (``delta`` 1) or out (-1); call under the
        process's own lock."""
        self.board.hosts[self.index * HOST_BUCKETS + bucket] += delta

    def host_total(self, bucket: int) -> int:
        """Connections from the host(s) of ``bucket`` over all processes."""
        hosts = self.board.hosts
        return int(sum(hosts[p * HOST_BUCKETS + bucket] for p in range(self.board.processes)))


class LoadBoard:
    """The counts of the processes accepting on one socket, in shared memory."""

    GONE = 1 << 30

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.processes = processes
        self.counts = context.RawArray("i", [self.GONE] * processes)
        self.established = context.RawArray("i", processes)
        self.hosts = context.RawArray("i", processes * HOST_BUCKETS)

    def slot(self, index: int) -> LoadSlot:
        return LoadSlot(self, index)
