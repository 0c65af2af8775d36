"""Who each process of a run's tree is: the trainer, worker k, a worker starting or exiting.

A DataLoader worker claims its slot (``worker_id``) at its first gather; non-persistent
workers are forked anew at each pass, so for a moment a tree can hold a worker of the new
pass that has not claimed yet (starting) beside one of the ended pass whose slot a new
worker took (exiting). Two facts tell them apart, never a guess from counts:

- a process seen holding slot ``k`` at an earlier sample whose slot is now another
  process's is a worker of an ended pass: ``worker k (exiting)``;
- a process that claims no slot while every worker slot was claimed after it started (by
  other processes) cannot be waiting for its first claim: ``worker (exiting)``. A starting
  worker's own slot still holds its predecessor, claimed before it was forked.

Anything else without a slot is ``worker (starting)`` (``child`` in a run without workers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TICK_S = 0.01  # /proc start times are in clock ticks (10 ms): a claim must be later by more


def process_roles(
    trainer: int,
    pids: Iterable[int],
    *,
    claimed: Mapping[int, int],
    claimed_at: Mapping[int, float | None],
    seen: Mapping[int, int],
    started: Mapping[int, float],
    num_workers: int | None,
) -> dict[int, str]:
    """The label of each process of the tree.

    Args:
        trainer: the trainer's PID.
        pids: the processes of its tree.
        claimed: PID -> worker id, of the worker slots as they are now.
        claimed_at: worker id -> when its slot was claimed (seconds, the clock of
            ``started``), ``None`` for a slot never claimed; one entry per worker id of the run.
        seen: PID -> worker id, of processes seen holding a worker slot at earlier samples.
        started: PID -> when the process started (seconds; PIDs whose start is unknown absent).
        num_workers: the run's ``num_workers`` (0 or ``None``: children are not its workers).
    """
    claims = list(claimed_at.values())
    every_slot_claimed = bool(claims) and len(claims) >= (num_workers or 0) and None not in claims
    last_claim_first = min((c for c in claims if c is not None), default=None)
    roles = {}
    for pid in pids:
        if pid == trainer:
            roles[pid] = "trainer"
        elif pid in claimed:
            roles[pid] = f"worker {claimed[pid]}"
        elif pid in seen:  # it held this slot; a newer worker took it
            roles[pid] = f"worker {seen[pid]} (exiting)"
        elif not num_workers:
            roles[pid] = "child"
        elif every_slot_claimed and pid in started and last_claim_first > started[pid] + TICK_S:  # type: ignore[operator]
            roles[pid] = "worker (exiting)"  # every slot was claimed after it started, none by it
        else:
            roles[pid] = "worker (starting)"
    return roles
