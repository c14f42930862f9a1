"""One Rekognition rate limit per operation for the whole Dask cluster, adaptive to throttling.

Use this when the job runs on Dask (any number of worker processes, on one host or many). A limiter
per process (`batch.aws.rekognition.RateLimiter`) splits the quota by the number of processes counted at
the start; it drifts as soon as workers join or leave, and its share is wasted while a worker is idle.

How it works
------------
- **The scheduler holds the buckets.** `QuotaExtension` is a Dask `SchedulerPlugin`. Its `start`
  registers the comm handler ``rekbatch_lease`` on the scheduler (the pattern of distributed's own
  `SemaphoreExtension`). Per operation it keeps a `ReservingBucket` and a `batch.core.aimd.AdaptiveRate`.
  The scheduler is one process whatever the number of workers, so there is one bucket per operation
  for the cluster, and no new service to run: Dask has no rate-limit primitive (dask/distributed#864),
  and Redis-backed limiters would add a server to every deployment. The scheduler is already the
  cluster's single point of failure, so this adds none.
- **Workers lease tokens in batches, for all operations at once.** A scheduler round trip costs
  ~0.5 ms of wall time and, measured in the job, ~1.4 ms of CPU across worker and scheduler. One per
  call would cost more CPU than the call itself at hundreds of calls/s. So a worker's
  `ClusterRateLimiter` asks for its *expected demand*: the operation's recent arrival rate on this
  worker (an exponentially decayed count, `DemandEstimate`) times `lease_horizon`, at least the
  threads already waiting, minus the tokens it holds. And one request carries every operation that
  is due, not just the one a thread waits for: an image goes through five operations in turn, so the
  five pools run low together. The scheduler grants at most ``ceil(rate * lease_seconds)`` per
  operation and request. Asking only for the threads already waiting (the first version) made
  0.54-0.70 round trips per call in the job; asking for demand, all operations in one request, made
  0.19 (one worker at 250 calls/s), and 0.10 once a lease's tokens went out one by one (below) and
  leases could grow to 0.2 s of tokens. An operation whose granted tokens are still on their way
  (waiting for their time, below) rides along too, when its waiting threads or its demand outnumber
  them: at the quota the bucket is in debt, so a lease's tokens take up to `max_wait` to arrive, and
  while an operation stayed out of other requests until its lease's last token, each operation
  leased on its own. On 4 workers that made 1.15 operations per request and a round trip per 3
  calls; riding along, 4.5 operations per request, 737 round trips per 7,500 calls instead of
  2,498 (188 instead of 758 on one worker). One request per operation is out at a time on a
  worker; the threads that wait for tokens wait on a condition.
- **The scheduler lends ahead instead of saying "come back later".** The bucket may go into debt, up
  to `max_wait` seconds of tokens. A lease is granted at once, with the delay after which its tokens
  may be used (Go's `rate.Limiter.ReserveN`; GCRA). A first version
  answered "0 tokens, retry in t" from a plain `batch.core.quota.TokenBucket`. Measured at 200/s on 4
  workers, it made 1.4 round trips per call: the workers polled and mostly got nothing. A reservation
  never wastes a round trip while the debt stays under `max_wait`, and it serves workers in the order
  they ask.
- **A lease's tokens go out one by one.** The bucket paid for a lease's tokens one after the other,
  1/rate apart, the last after the reply's wait (`token_times`). The leasing thread credits each at
  that time, and each wakes the one thread whose turn it is. Crediting a whole lease at once woke up
  to 20 threads together (4 tokens of each of 5 operations): threads woken together hand the GIL to
  each other at every socket call they make (with 100 threads at 250 calls/s, waking them 5 at a
  time instead of one by one raised the futex calls per call from 5 to 30), and their calls reached
  the endpoint as a burst. One by one, leases of 0.2 s of tokens cost no burst: one worker at 250
  calls/s went from 63-67 system calls per call to 40-48, and from about 1,450 lease round trips per
  7,500 calls to about 750.
- **Tokens are spent within their TTL, so the bound holds.** Tokens leased ahead of demand wait on
  the worker for the threads that arrive next. They expire `token_ttl` seconds after the latest token
  of their operation became usable on the worker (a slow round trip must not expire them unused; a
  steady stream of leases renews the tokens still held), so an idle worker cannot hoard tokens and
  burst later. A token is used no earlier than the scheduler's
  reservation allows and at most `token_ttl` later, so over any window of T seconds the cluster starts
  at most ``burst + rate * (T + token_ttl)`` calls per operation, plus one reply's latency. In
  practice tokens leased for demand are taken by threads arriving at about the rate they were
  reserved at, so the measured bound is ``burst + rate * T``, give or take a token
  (`tests/aws/test_ratelimit.py`, `make bench`).
- **Joining and leaving workers change nothing.** The bound is the scheduler's bucket and does not
  depend on the number of workers. A worker that dies loses at most one lease's tokens.
- **Adaptive.** `ClusterRateLimiter.report_throttle` counts throttled calls. The count rides with the
  next lease request. The scheduler cuts the operation's rate by AIMD (at most once per cooldown: a
  burst of throttles from many workers is one overload) and lets it climb back to the quota linearly.

Rejected: one Actor holding the buckets (it dies with its worker, and that worker can't be retired);
`distributed.Semaphore` (limits concurrency, not rate); per-worker `resources` (scale with workers);
botocore's adaptive mode (per client, see `batch.core.aimd`).

Re-registering the plugin (a new run on the same cluster) replaces the buckets: use `install_quota`.
Two jobs on one cluster that register under the same name share one set of buckets, which is right
for one account and region. The last registration's quotas win.
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
        wait at the new rate, so tokens reserved after the change come after them. Kept as a count,
        a debt paid back faster after a rise let new tokens fall between the last lease's."""
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
    others get `default`. `burst` is the bucket size in tokens, 1 by default, as the per-process
    `batch.aws.rekognition.RateLimiter`'s: calls go out evenly, and the account's own bucket keeps its
    room for what the job cannot pace (tokens used late, then the next on time; threads waiting for
    the GIL or a core before they send). Whatever this bucket lets out at once comes out of that
    room. Against the local endpoint's 10-token bucket at 50/s, on 4 workers: with 5 tokens here
    (0.1 s), 2 runs of 15 had one or two calls throttled, and the endpoint's bucket fell to 1.2-2.8
    tokens in the first seconds; with 1, no run of 20 was throttled, and it fell to 3.8-6.4. Past
    the first seconds both kept about 5-6: at the quota this bucket is in debt, and its size no
    longer matters. A lease's tokens
    may be lent up to `max_wait` seconds ahead; past that, the worker is told to ask again later.
    The keyword arguments `beta`, `alpha` and `cooldown` are `batch.core.aimd.AdaptiveRate`'s.

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
        # Not divided by the number of workers: at 50/s over 4 workers that made every lease a single
        # token, one round trip per call. Reservations already serve workers in the order they ask.
        return max(1, math.ceil(rate * self.lease_seconds))


def install_quota(client: Client, quotas: Mapping[str, float], default: float, **options: Any) -> None:
    """Put a fresh `QuotaExtension` on the client's scheduler, replacing any earlier one.

    Call it once per run, before submitting tasks. `options` are `QuotaExtension`'s keyword arguments.
    The scheduler process must be able to import `batch` (the same environment as the workers).
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
    condition (sharing the limiter's lock), so a handed-out token wakes exactly the thread it is for:
    one shared `notify_all` woke every waiting thread (up to 128 in the job) to find nothing, and that
    showed as 14 % of a worker's GIL time in a profile."""

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
    process (`for_worker`), shared by all its threads. Pass `lease` (plus `clock`, `sleep`) to test it
    without Dask.
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
        #: Seconds of expected demand one lease asks for (the scheduler caps it at its lease size).
        #: Tokens asked for ahead of demand must be taken within their TTL: with 0.25 s, 2.6 % of the
        #: tokens expired unused on 4 workers (12.5 calls/s per operation and worker take 4 tokens in
        #: 0.32 s) and utilisation fell to 0.96; with 0.15 s, none.
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
        when it may be used (`token_times`), each waking the thread whose turn it is: see "A lease's
        tokens go out one by one" in the module's docstring.
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
            # Counted from when the token became usable here (after the reply and its wait), not
            # from before the request: on a loaded machine a round trip can outlast the TTL, and
            # tokens timed from the request would all expire unused while the scheduler counts them
            # as spent, so workers would lease forever and call nothing (seen on a 2-core run).
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
