"""Full-weight pushes from a trainer to the engines that serve its model, by a broadcast.

A standalone ``torch.distributed`` process group per model (not the default group, which Ray
Train's workers own), met through a ``TCPStore`` the driver hosts: rank 0 is the trainer's
rank-0 worker, ranks 1.. the engines. Per version the sender publishes the state's layout and a
fingerprint in the store, then broadcasts the tensors in flat per-dtype buckets; the receivers
rebuild the state dict from their buffers. NCCL on GPUs, gloo on CPUs (the CPU tests use gloo).

Every wait has a deadline: a dead peer makes the others raise :class:`PushTimeout` instead of
hanging the job, the broken group is aborted, and the next push meets under a new channel name.
The sender announces "nothing" when it does not hold the state the driver wants served (its
worker restarted since the update, say); the receivers then return ``None`` and the driver
pushes through the object store instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

State = dict[str, torch.Tensor]
SCHEMA = 1
BUCKET_BYTES = 256 << 20  # broadcast in buckets: bounded extra memory, several in flight


class PushTimeout(TimeoutError):
    """A peer of a push group did not arrive or finish in time."""


@dataclass(frozen=True)
class Channel:
    """Where and how the members of one push group meet (sent to every member)."""

    name: str  # unique per group: a fresh name after a failure
    host: str
    port: int
    world: int  # 1 sender + receivers
    backend: str = "gloo"  # "gloo" (CPU tensors) | "nccl" (CUDA tensors)
    timeout_s: float = 120.0
    bucket_bytes: int = BUCKET_BYTES

    @property
    def device(self) -> str:
        return "cuda" if self.backend == "nccl" else "cpu"


def host_store(host: str, timeout_s: float = 120.0) -> dist.TCPStore:
    """The rendezvous store, in a long-lived process (the driver); the OS picks the port."""
    return dist.TCPStore(
        host, 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=timeout_s)
    )


def fingerprint(state: State) -> str:
    """A cheap identity for a state: names, shapes, dtypes and a sample of each tensor's values
    (a state read back from its checkpoint has the same fingerprint as the trained one)."""
    h = hashlib.sha1()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        flat = t.reshape(-1)
        sample = torch.cat([flat[:64], flat[-64:], flat[:: max(1, flat.numel() // 64)]])
        h.update(sample.to("cpu", torch.float64).numpy().tobytes())
    return h.hexdigest()


def _layout(state: State) -> list[list[Any]]:
    return [[k, str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in state.items()]


def _buckets(layout: list[list[Any]], limit: int) -> Iterator[tuple[str, list[list[Any]]]]:
    """Consecutive entries of one dtype, up to ``limit`` bytes each (a larger tensor alone)."""
    bucket: list[list[Any]] = []
    size = 0
    for entry in layout:
        _, dtype, shape = entry
        nbytes = _numel(shape) * torch.empty((), dtype=getattr(torch, dtype)).element_size()
        if bucket and (dtype != bucket[0][1] or size + nbytes > limit):
            yield bucket[0][1], bucket
            bucket, size = [], 0
        bucket.append(entry)
        size += nbytes
    if bucket:
        yield bucket[0][1], bucket


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


class Member:
    """One process's end of a channel: rank 0 sends versions, the others receive them."""

    def __init__(self, channel: Channel, rank: int):
        self.channel, self.rank = channel, rank
        self.timeout = timedelta(seconds=channel.timeout_s)
        try:
            client = dist.TCPStore(
                channel.host, channel.port, is_master=False, timeout=self.timeout
            )
        except Exception as exc:  # noqa: BLE001 - the store's errors are plain RuntimeErrors
            raise PushTimeout(f"push channel {channel.name}: store unreachable ({exc})") from exc
        self.store = dist.PrefixStore(f"coalition-push/{channel.name}/", client)
        # every member checks in before the group forms, so a missing one is a clear timeout
        # here rather than a hang inside the backend's own rendezvous (NCCL's has no deadline)
        self.store.set(f"join/{rank}", "1")
        self._wait_keys([f"join/{r}" for r in range(channel.world)], "join")
        self.group = self._make_group()

    def _make_group(self) -> Any:
        c = self.channel
        if c.backend == "nccl":
            opts = dist.ProcessGroupNCCL.Options()
            # past our own deadline: we abort the group first, before NCCL's watchdog would
            # tear the whole process (a generator actor, a trainer worker) down
            opts._timeout = 2 * self.timeout
            torch.cuda.set_device(torch.cuda.current_device())
            return dist.ProcessGroupNCCL(self.store, self.rank, c.world, opts)
        return dist.ProcessGroupGloo(self.store, self.rank, c.world, self.timeout)

    def _wait_keys(self, keys: list[str], what: str) -> None:
        try:
            self.store.wait(keys, self.timeout)
        except Exception as exc:  # noqa: BLE001 - DistStoreError on timeout
            raise PushTimeout(
                f"push channel {self.channel.name}: {what} timed out after "
                f"{self.channel.timeout_s:.0f}s (a member is missing or dead)"
            ) from exc

    def _broadcast(self, buffer: torch.Tensor) -> None:
        """Broadcast ``buffer`` from rank 0, polling for completion against the deadline."""
        work = self.group.broadcast([buffer], dist.BroadcastOptions())
        deadline = time.monotonic() + self.channel.timeout_s
        delay = 1e-4
        while not work.is_completed():
            if time.monotonic() > deadline:
                self.abort()
                raise PushTimeout(
                    f"push channel {self.channel.name}: broadcast timed out after "
                    f"{self.channel.timeout_s:.0f}s"
                )
            time.sleep(delay)
            delay = min(2 * delay, 0.01)
        work.wait()  # raises the backend's own error, if the work failed

    def send(self, state: State | None, version: int) -> bool:
        """Broadcast ``state`` as ``version`` (``None``: tell the receivers there is nothing)."""
        header: dict[str, Any] = {"schema": SCHEMA, "version": version}
        if state is not None:
            header |= {"layout": _layout(state), "fingerprint": fingerprint(state)}
        self.store.set(f"v{version}/header", json.dumps(header))
        if state is None:
            return False
        device = self.channel.device
        for _, bucket in _buckets(header["layout"], self.channel.bucket_bytes):
            flat = torch.cat([state[k].detach().reshape(-1).to(device) for k, _, _ in bucket])
            self._broadcast(flat)
        return True

    def receive(self, version: int) -> State | None:
        """Receive ``version``'s state (``None`` if the sender has nothing to send)."""
        self._wait_keys([f"v{version}/header"], f"version {version}'s header")
        header = json.loads(self.store.get(f"v{version}/header"))
        if header.get("schema") != SCHEMA or header.get("version") != version:
            raise ValueError(f"push channel {self.channel.name}: unexpected header {header}")
        if "layout" not in header:
            return None
        state: State = {}
        for dtype, bucket in _buckets(header["layout"], self.channel.bucket_bytes):
            sizes = [_numel(shape) for _, _, shape in bucket]
            flat = torch.empty(sum(sizes), dtype=getattr(torch, dtype), device=self.channel.device)
            self._broadcast(flat)
            for (name, _, shape), part in zip(bucket, flat.split(sizes), strict=True):
                state[name] = part.view(shape)
        if fingerprint(state) != header["fingerprint"]:
            raise ValueError(f"push channel {self.channel.name}: v{version} arrived corrupted")
        return state

    def abort(self) -> None:
        """Tear the group down (after a failure: its peers may be gone)."""
        for method in ("abort", "shutdown"):
            if hasattr(self.group, method):
                with contextlib.suppress(Exception):  # best effort on a broken group
                    getattr(self.group, method)()
                return


class Members:
    """The members a process holds, one per model key; a new channel replaces the old one."""

    def __init__(self) -> None:
        self._held: dict[str, Member] = {}

    def get(self, key: str, channel: Channel, rank: int) -> Member:
        held = self._held.get(key)
        if held is not None and held.channel == channel and held.rank == rank:
            return held
        if held is not None:
            held.abort()
        self._held.pop(key, None)
        member = Member(channel, rank)
        self._held[key] = member
        return member

    def drop(self, key: str) -> None:
        """Forget ``key``'s member after a failure (the next push meets afresh)."""
        held = self._held.pop(key, None)
        if held is not None:
            held.abort()
