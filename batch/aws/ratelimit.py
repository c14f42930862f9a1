"""One Rekognition rate limit per operation for the whole Dask cluster, adaptive to throttling.

The scheduler holds one token bucket per operation (`QuotaExtension`, a scheduler plugin), so the quota
holds however many workers join or leave; the per-process `batch.aws.rekognition.RateLimiter` cannot.
Each worker process's `ClusterRateLimiter` leases tokens for its expected demand, every operation that
is due in one round trip; the scheduler lends ahead (a lease says when its tokens may be used), and the
worker hands them to its threads one by one at those times. Throttles reported by the workers cut the
rate (AIMD, `batch.core.aimd`). Over any window of T seconds the cluster starts at most
``burst + rate * (T + token_ttl)`` calls per operation, plus one reply's latency. Register it once per
run with `install_quota`. See docs/design/rate-limiter.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from distributed import Client, get_worker
from distributed.diagnostics.plugin import SchedulerPlugin

from batch.core.aimd import AdaptiveRate

__all__ = [
    "HANDLER",
    "PLUGIN_NAME",
    "ClusterRateLimiter",
    "LeaseReply",
    "LimiterStats",
    "QuotaExtension",
    "ReservingBucket",
    "install_quota",
    "scheduler_lease",
    "token_times",
]

logger = logging.getLogger(__name__)

#: The scheduler comm handler the workers call.
HANDLER = "rekbatch_lease"
#: The name the plugin is registered under; one per cluster, replaced by each run.
PLUGIN_NAME = "rekbatch-quota"


class LeaseReply(TypedDict):
    """The scheduler's answer to one lease request."""

    granted: int
    #: Seconds to wait before using the granted tokens, or, when none were granted, before asking again.
    wait: float
    #: The operation's allowed rate now (calls/s across the cluster), after AIMD.
    rate: float
    #: Seconds the granted tokens stay valid on the worker.
    ttl: float


#: Ask the scheduler, in one round trip, for tokens of several operations: operation -> (want,
#: throttled calls to report); the answer has one `LeaseReply` per operation asked for.
Lease = Callable[[Mapping[str, tuple[int, int]]], dict[str, LeaseReply]]


class ReservingBucket:
    """A token bucket that lends ahead: `reserve` takes tokens now and says when they may be used.

    `rate` tokens per second, capacity `burst`, starts full. The count may go negative (tokens lent
    against the future), but no lower than ``-rate * max_wait``. Any caller who waits the returned
    delay before using its tokens stays inside the token-bucket bound: over any window of T seconds,
    at most ``burst + rate * T`` tokens are used. Pure: `now` is passed in.

    Use `batch.core.quota.TokenBucket` when a caller can simply wait for a token itself. Use this one when
    asking costs a round trip, so an answer of "nothing yet" would waste it.
    """

    def __init__(self, rate: float, burst: float, now: float, max_wait: float) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_wait = max_wait
        self._tokens = self.burst
        self._updated = now

    def set_rate(self, rate: float, now: float) -> None:
        """Change the refill rate from `now` on.

        Tokens already lent keep the times they were lent for: a debt is a wait, and it stays the same
        wait at the new rate, so tokens reserved after the change come after them."""
        self._refill(now)
        if self._tokens < 0:
            self._tokens *= rate / self.rate
        self.rate = float(rate)

    def reserve(self, n: int, now: float) -> tuple[int, float]:
        """Take up to `n` tokens: (taken, seconds until they may be used), or (0, seconds until asking
        again could take one)."""
        self._refill(now)
        floor = -self.rate * self.max_wait
        taken = min(n, math.floor(self._tokens - floor + _EPSILON))
        if taken < 1:
            return 0, (1 - (self._tokens - floor)) / self.rate
        self._tokens -= taken
        return taken, max(0.0, -self._tokens / self.rate)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)  # a clock stepping back must not mint tokens
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = max(self._updated, now)


#: Token counts this close to a whole token count as whole (float rounding after exact waits).
_EPSILON = 1e-9


@dataclass
class _Operation:
    """The scheduler's state for one operation."""

    bucket: ReservingBucket
    rate: AdaptiveRate


class QuotaExtension(SchedulerPlugin):
    """The cluster's token buckets, one per operation, on the scheduler; adaptive to throttling.

    `quotas` maps an operation name (e.g. ``"DetectLabels"``) to its quota in calls per second;
    others get `default`. `burst` is the bucket size in tokens, 1 by default: calls go out evenly, and
    the account's own bucket keeps its room for the jitter the job cannot pace. A lease's tokens may be
    lent up to `max_wait` seconds ahead; past that, the worker is told to ask again later. `beta`,
    `alpha` and `cooldown` are `batch.core.aimd.AdaptiveRate`'s.

    Register it with `install_quota`. Tests may call `start` with any object that has a
    ``handlers`` dict and then call `lease` directly.
    """

    name = PLUGIN_NAME

    def __init__(
        self,
        quotas: Mapping[str, float],
        default: float,
        *,
        burst: float = 1.0,
        lease_seconds: float = 0.2,
        max_wait: float = 0.25,
        token_ttl: float = 0.25,
        beta: float = 0.7,
        alpha: float = 0.1,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for operation, tps in {**quotas, "default": default}.items():
            if not (tps > 0 and math.isfinite(tps)):
                raise ValueError(f"quota for {operation} must be a finite number > 0, got {tps!r}")
        self.quotas = dict(quotas)
        self.default = float(default)
        self.burst = burst
        self.lease_seconds = lease_seconds
        self.max_wait = max_wait
        self.token_ttl = token_ttl
        self._aimd = {"beta": beta, "alpha": alpha, "cooldown": cooldown}
        self._clock = clock
        self._operations: dict[str, _Operation] = {}
        self._scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        """Take over the lease handler, and start from fresh buckets."""
        self._scheduler = scheduler
        self._operations = {}
        # Registering under a taken name makes the scheduler warn "overwriting"; a new run replacing the
        # last run's buckets is the intended use, so drop the old plugin first (start runs before the add).
        getattr(scheduler, "plugins", {}).pop(self.name, None)
        scheduler.handlers[HANDLER] = self.lease_many
        logger.info("cluster quota: %s, default %s calls/s", self.quotas, self.default)

    async def close(self) -> None:
        if self._scheduler is not None and self._scheduler.handlers.get(HANDLER) == self.lease_many:
            del self._scheduler.handlers[HANDLER]

    def lease_many(self, requests: Mapping[str, Any]) -> dict[str, LeaseReply]:
        """The comm handler: `lease` for each ``operation: [want, throttled]`` of one request."""
        return {operation: self.lease(operation, int(want), int(throttled))
                for operation, (want, throttled) in requests.items()}  # fmt: skip

    def lease(self, operation: str, want: int = 1, throttled: int = 0) -> LeaseReply:
        """Grant up to `want` tokens of `operation` now, after applying `throttled` reports.

        `want` 0 only delivers the reports."""
        now = self._clock()
        state = self._operation(operation)
        if throttled > 0 and state.rate.on_throttle(now):
            logger.info("%s throttled: rate cut to %.2f/s", operation, state.rate.current(now))
        rate = state.rate.current(now)
        if rate != state.bucket.rate:
            state.bucket.set_rate(rate, now)
        granted, wait = (0, 0.0)
        if want > 0:
            granted, wait = state.bucket.reserve(min(want, self._lease_size(rate)), now)
        return {"granted": granted, "wait": wait, "rate": rate, "ttl": self.token_ttl}

    def _operation(self, operation: str) -> _Operation:
        state = self._operations.get(operation)
        if state is None:
            quota = self.quotas.get(operation, self.default)
            state = _Operation(
                ReservingBucket(quota, self.burst, self._clock(), self.max_wait),
                AdaptiveRate(quota, **self._aimd),
            )
            self._operations[operation] = state
        return state

    def _lease_size(self, rate: float) -> int:
        # Not divided by the number of workers: many workers would get 1-token leases, a round trip per
        # call. Reservations already serve workers in the order they ask.
        return max(1, math.ceil(rate * self.lease_seconds))


def install_quota(client: Client, quotas: Mapping[str, float], default: float, **options: Any) -> None:
    """Put a fresh `QuotaExtension` on the client's scheduler, replacing any earlier one.

    Call it once per run, before submitting tasks. `options` are `QuotaExtension`'s keyword arguments.
    The scheduler process must be able to import `batch` (the same environment as the workers). Two jobs
    on one cluster share one set of buckets (right for one account and region); the last quotas win.
    """
    client.register_plugin(QuotaExtension(quotas, default, **options), name=PLUGIN_NAME)


def scheduler_lease(worker: Any, timeout: float = 30.0) -> Lease:
    """A `Lease` that calls the scheduler of `worker` (a `distributed.Worker`) from any thread.

    The call runs on the worker's event loop (`asyncio.run_coroutine_threadsafe`), over the worker's
    pooled connection to the scheduler. It must not be called from that loop's own thread.
    """
    loop = worker.loop.asyncio_loop

    def lease(requests: Mapping[str, tuple[int, int]]) -> dict[str, LeaseReply]:
        if _running_loop() is loop:
            raise RuntimeError("a cluster rate limit cannot be acquired from the worker's event loop")

        async def call() -> dict[str, LeaseReply]:
            method = getattr(worker.scheduler, HANDLER)
            replies: dict[str, LeaseReply] = await method(
                requests={op: list(request) for op, request in requests.items()}
            )
            return replies

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)

    return lease


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass(frozen=True)
class LimiterStats:
    """What one process's limiter did: tokens taken, lease round trips, tokens expired unused."""

    acquired: int
    leases: int
    expired: int


class _Waiter:
    """One thread in `acquire`: `ready` once a token was handed to it. Each waiter sleeps on its own
    condition (sharing the limiter's lock), so a handed-out token wakes exactly the thread it is for,
    not every waiting thread to find nothing."""

    __slots__ = ("ready", "wake")

    def __init__(self, lock: threading.Lock) -> None:
        self.ready = False
        self.wake = threading.Condition(lock)


class DemandEstimate:
    """Arrivals per second, as an exponentially decayed count with time constant `tau` seconds. Pure.

    One arrival adds 1 to the count; the count decays by ``exp(-dt / tau)``; the rate is count / tau.
    A steady rate r converges to r within a few `tau`; a stop decays to nothing as fast.
    """

    __slots__ = ("_count", "_tau", "_updated")

    def __init__(self, tau: float = 1.0) -> None:
        self._tau = tau
        self._count = 0.0
        self._updated = -math.inf

    def arrive(self, now: float) -> None:
        self._count = self._decayed(now) + 1.0
        self._updated = max(self._updated, now)

    def rate(self, now: float) -> float:
        return self._decayed(now) / self._tau

    def _decayed(self, now: float) -> float:
        if self._count == 0.0:
            return 0.0
        return self._count * math.exp(-max(0.0, now - self._updated) / self._tau)


@dataclass
class _Pool:
    """One operation's tokens on this worker, and who is waiting for them. Guarded by the condition."""

    tokens: int = 0
    expires_at: float = 0.0
    queue: deque[_Waiter] = field(default_factory=deque)
    #: A lease request is out (or, granted nothing, its "ask again after" is not over).
    leasing: bool = False
    #: Tokens granted by leases that landed, not yet credited (each waits for its time).
    pending: int = 0
    throttled: int = 0
    rate: float = math.nan
    demand: DemandEstimate = field(default_factory=DemandEstimate)


class ClusterRateLimiter:
    """The worker side: `acquire` blocks until the cluster's quota lets one more call of an operation go.

    Same interface as `batch.aws.rekognition.RateLimiter` plus `report_throttle`. Build one per worker
    process (`for_worker`), shared by all its threads. Leased tokens expire a TTL after they became
    usable, so an idle worker cannot hoard them. Pass `lease` (plus `clock`, `sleep`) to test it without
    Dask.
    """

    def __init__(
        self,
        lease: Lease,
        *,
        lease_horizon: float = 0.15,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._lease = lease
        #: Seconds of expected demand one lease asks for (the scheduler caps it at its lease size). Kept
        #: well below the tokens' TTL, so tokens asked for ahead of demand are taken before they expire.
        self._horizon = lease_horizon
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # guards the pools; waiters sleep on their own
        self._pools: dict[str, _Pool] = {}
        self._acquired = self._leases = self._expired = 0

    @classmethod
    def for_worker(cls, worker: Any = None) -> ClusterRateLimiter:
        """A limiter for the Dask worker running this code.

        Call it in the task's own thread: `distributed.get_worker` does not see the worker from
        threads the task starts (a `ThreadPoolExecutor`'s threads, for instance). The limiter it
        returns may then be used from any thread.
        """
        return cls(scheduler_lease(worker if worker is not None else get_worker()))

    def acquire(self, operation: str) -> None:
        """Block until one call of `operation` may start. Threads are served first come, first served.

        Tokens are handed to waiting threads in the order they arrived, not to whoever grabs the lock
        first: otherwise the thread that just leased, looping straight back, would win every time.
        """
        with self._cond:
            pool = self._pools.setdefault(operation, _Pool())
            pool.demand.arrive(self._clock())
            waiter = _Waiter(self._lock)
            pool.queue.append(waiter)
            try:
                while not self._hand_out(pool, waiter):
                    if pool.leasing or pool.pending:  # tokens are coming: wait for a turn
                        waiter.wake.wait()
                    else:
                        self._refill(operation)
            finally:
                if not waiter.ready:  # leaving with an exception: let the next thread lease
                    pool.queue.remove(waiter)
                    self._wake_next(pool)

    def report_throttle(self, operation: str) -> None:
        """A call of `operation` was throttled: tell the scheduler with the next lease request."""
        with self._cond:
            self._pools.setdefault(operation, _Pool()).throttled += 1

    def rate(self, operation: str) -> float:
        """The cluster's allowed rate for `operation` at the last lease (NaN before the first)."""
        with self._cond:
            pool = self._pools.get(operation)
            return pool.rate if pool else math.nan

    def stats(self) -> LimiterStats:
        with self._cond:
            return LimiterStats(self._acquired, self._leases, self._expired)

    def _hand_out(self, pool: _Pool, waiter: _Waiter | None = None) -> bool:
        """Give the pool's tokens to the longest-waiting threads (dropping expired ones), wake them,
        and say whether `waiter` has its token."""
        if pool.tokens and self._clock() >= pool.expires_at:
            self._expired += pool.tokens
            pool.tokens = 0
        while pool.tokens and pool.queue:
            served = pool.queue.popleft()
            served.ready = True
            served.wake.notify()
            pool.tokens -= 1
            self._acquired += 1
        return waiter is not None and waiter.ready

    def _wake_next(self, pool: _Pool) -> None:
        """Hand out what the pool holds; if threads still wait and no tokens are coming, wake the
        longest-waiting one to lease (the others sleep on until a token is theirs)."""
        self._hand_out(pool)
        if pool.queue and not pool.leasing and not pool.pending:
            pool.queue[0].wake.notify()

    def _want(self, pool: _Pool, now: float) -> int:
        """Tokens to ask for: the expected demand over the horizon, at least the waiting threads,
        minus the tokens in hand and those on their way."""
        held = (pool.tokens if now < pool.expires_at else 0) + pool.pending
        expected = math.ceil(pool.demand.rate(now) * self._horizon - _EPSILON)
        return max(len(pool.queue), expected) - held

    def _refill(self, operation: str) -> None:
        """Lease tokens for `operation`, and in the same round trip for every other operation that is
        due, its earlier tokens still on their way or not (the caller holds the condition; it is
        released during the RPC and the waits). The tokens granted are credited one at a time, each
        when it may be used (`token_times`), each waking the thread whose turn it is, so the calls do
        not reach the endpoint as a burst.
        """
        requests = self._due(operation)
        replies: dict[str, LeaseReply] = {}
        open_leases = set(requests)  # operations whose lease still holds their pool's `leasing`
        uncredited: dict[str, int] = {}
        self._cond.release()
        try:
            replies = self._lease(requests)
            landed = self._clock()
            with self._cond:
                uncredited = self._land(replies, open_leases)
            for at, name in _schedule(replies, landed, operation):
                delay = at - self._clock()
                if delay > 0:
                    self._sleep(delay)
                with self._cond:
                    self._credit(name, replies[name], uncredited, open_leases)
        finally:
            self._cond.acquire()
            self._settle(requests, replies, open_leases, uncredited)

    def _due(self, operation: str) -> dict[str, tuple[int, int]]:
        """The request: (want, throttled reports) of `operation` and of every operation that is due
        and has no request out; marks them leasing (the caller holds the condition)."""
        now = self._clock()
        requests: dict[str, tuple[int, int]] = {}
        for name, pool in self._pools.items():
            if pool.leasing:
                continue
            want = self._want(pool, now)
            if name == operation:
                want = max(want, 1)  # a thread is waiting for it
            if want > 0 or pool.throttled:
                requests[name] = (max(want, 0), pool.throttled)
                pool.leasing, pool.throttled = True, 0
        return requests

    def _land(self, replies: Mapping[str, LeaseReply], open_leases: set[str]) -> dict[str, int]:
        """Take in the replies: each operation's rate; the tokens granted count as pending, and their
        leases end, so another request may carry those operations while the tokens wait for their
        time. Returns the tokens to credit per operation (the caller holds the condition)."""
        uncredited: dict[str, int] = {}
        for name, reply in replies.items():
            self._pools[name].rate = reply["rate"]
            if reply["granted"]:
                uncredited[name] = reply["granted"]
                self._pools[name].pending += reply["granted"]
                self._pools[name].leasing = False
                open_leases.discard(name)
        return uncredited

    def _credit(
        self, name: str, reply: LeaseReply, uncredited: dict[str, int], open_leases: set[str]
    ) -> None:
        """Add one token of `name`'s reply to its pool, or, if the reply granted nothing, end its
        lease; wake the thread whose turn it is (the caller holds the condition)."""
        pool = self._pools[name]
        if name in uncredited:
            uncredited[name] -= 1
            pool.pending -= 1
            if self._clock() >= pool.expires_at:
                self._expired += pool.tokens  # drop expired tokens before the fresh one extends the TTL
                pool.tokens = 0
            pool.tokens += 1
            # Counted from when the token became usable here, not from before the request: a round
            # trip can outlast the TTL on a loaded machine, and tokens timed from the request would
            # all expire unused while the scheduler counts them as spent (a livelock).
            pool.expires_at = self._clock() + reply["ttl"]
        else:  # granted nothing: its "ask again after" is over
            pool.leasing = False
            open_leases.discard(name)
        self._wake_next(pool)

    def _settle(
        self,
        requests: Mapping[str, tuple[int, int]],
        replies: Mapping[str, LeaseReply],
        open_leases: set[str],
        uncredited: Mapping[str, int],
    ) -> None:
        """After a lease, however it ended: keep the throttle reports of operations not answered, drop
        the tokens not credited (interrupted), end the open leases, wake who may go on (the caller
        holds the condition)."""
        self._leases += 1
        for name, (_, throttled) in requests.items():
            if name not in replies:  # not answered: report with the next request
                self._pools[name].throttled += throttled
        for name, count in uncredited.items():  # interrupted while crediting: the rest is lost
            self._pools[name].pending -= count
        for name in open_leases:
            self._pools[name].leasing = False
        for name in requests:
            self._wake_next(self._pools[name])


def _schedule(replies: Mapping[str, LeaseReply], landed: float, operation: str) -> list[tuple[float, str]]:
    """(when, operation) for each token granted, in time order; an operation granted nothing gets one
    entry, without a token, when its lease ends. Pure."""
    entries: list[tuple[float, str]] = []
    for name, reply in replies.items():
        if not reply["granted"]:
            # Nothing yet: the caller's operation waits out the scheduler's "ask again after"; a
            # piggybacked one ends at once (its own waiters will ask again).
            entries.append((landed + (reply["wait"] if name == operation else 0.0), name))
            continue
        entries.extend((at, name) for at in token_times(reply, landed))
    entries.sort(key=lambda entry: entry[0])
    return entries


def token_times(reply: LeaseReply, landed: float) -> list[float]:
    """When each token of a lease that `landed` may be used. Pure.

    The scheduler's `wait` is when its bucket has paid for the last token. Each earlier token was paid
    for 1/rate before the next (the bucket refills at the rate), so it may go then (GCRA): at the
    quota, a lease's tokens go one by one, 1/rate apart; while the bucket has tokens to spare, at once.
    """
    gap = 1.0 / reply["rate"]
    granted = reply["granted"]
    return [landed + max(0.0, reply["wait"] - (granted - 1 - i) * gap) for i in range(granted)]
