"""Every Prometheus metric the scaler exports, in one place.

Conventions: the ``fly_scaler_`` prefix, base units (seconds, bytes, USD), ``_total`` counters, and
bounded labels only: pool, app, queue, action, code, reason, state, size — never job or machine ids.
Each :class:`Metrics` owns its own registry, so tests and several scalers in one process do not mix.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["API_ACTIONS", "GITHUB_DELIVERY_RESULTS", "LATENCY_BUCKETS", "Metrics"]

# Label values known in advance (see Metrics.initialize).
API_ACTIONS = (
    "Machines_list", "Machines_create", "Machines_start", "Machines_delete", "Machines_show",
)
LAUNCH_RESULTS = (
    "created", "started", "failed", "rate_limited", "capacity", "refused", "abandoned",
)
REAP_REASONS = (
    "stopped", "failed", "boot_timeout", "max_runtime", "stuck", "orphan", "invalid_options",
    "unlisted", "finished_lingering",
)
RELEASE_REASONS = (
    "machine_gone", "stopped", "failed", "stuck", "boot_timeout", "max_runtime",
    "invalid_options", "fly_refused", "unlisted", "pool_gone", "over_cap",
)
JOB_DEAD_LETTER_REASONS = ("job_failed", "setup", "max_age")
"""Dead letters made where the job ends (dramatiq gave up, the runner's set-up, at claim)."""
GITHUB_DELIVERY_RESULTS = (
    "queued", "started", "completed", "ignored", "duplicate", "refused", "invalid_signature",
    "malformed", "too_large", "error",
)
NOT_TAKEN_REASONS = (
    "cap_pool", "cap_app", "cap_global", "rate_limit", "budget", "unknown_data",
)
EXIT_WAIT_RESULTS = ("exited", "gone", "unanswered")
"""How a wait for a finished job's machine to exit ended: Fly answered it stopped or destroyed;
it was gone already (404); no answer (timeout, error, cut short): left to the listings."""
JOB_COST_BUCKETS = (0.00001, 0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
"""USD per job: a shared-cpu-1x second is about 7.5e-7 USD, a performance-16x hour about 0.69."""

# From 5 ms (an event-driven launch) to 15 min (a cold machine that took long to boot).
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
)
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0)
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The scaler's metrics on a private registry (``registry``); render with :meth:`render`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        p = "fly_scaler_"

        # Queues (from Redis, every tick).
        self.queue_messages = Gauge(
            p + "queue_messages", "Messages in a queue by state "
            "(ready, delayed, in_flight, dead, claimed).", ["queue", "state"], registry=r)
        self.queue_oldest_age = Gauge(
            p + "queue_oldest_ready_age_seconds", "Age of the oldest ready message.",
            ["queue"], registry=r)

        # Machines and pools (from Fly, every tick).
        self.machines = Gauge(
            p + "machines", "Our machines by pool and Fly state.", ["pool", "state"], registry=r)
        self.desired_machines = Gauge(
            p + "desired_machines", "Machines the planner wants per pool.", ["pool"], registry=r)
        self.live_machines = Gauge(
            p + "live_machines", "Machines that count against caps per pool (booting, running and "
            "in-flight launches).", ["pool"], registry=r)
        self.machine_cap = Gauge(
            p + "machine_cap", "Configured machine caps by scope (global, app, pool).",
            ["scope", "name"], registry=r)
        self.cap_usage = Gauge(
            p + "cap_usage_ratio", "Live machines divided by the cap, by scope.",
            ["scope", "name"], registry=r)

        # Launches, jobs, reaps.
        self.launches = Counter(
            p + "launches_total", "Machine launches by pool and result (created: a create made "
            "or found the machine; started: a stopped one started; slot: a job started on a "
            "warm slot; slot_start_failed; failed, rate_limited, "
            "capacity, refused: Fly refused it for good; abandoned: no answer in time).",
            ["pool", "result"], registry=r)
        self.enqueue_to_started = Histogram(
            p + "enqueue_to_started_seconds", "Time from enqueue to the job's machine started.",
            ["pool"], buckets=LATENCY_BUCKETS, registry=r)
        self.enqueue_to_launch = Histogram(
            p + "enqueue_to_launch_seconds", "Time from enqueue to the create request sent.",
            ["pool"], buckets=LATENCY_BUCKETS, registry=r)
        self.job_run = Histogram(
            p + "job_run_seconds", "Run time of a per-job job in its machine's runner, from "
            "taking the message to its ack or nack.",
            ["pool"], buckets=RUN_BUCKETS, registry=r)
        self.jobs_finished = Counter(
            p + "jobs_finished_total", "Per-job jobs that ended, by outcome, as the message's "
            "status says: done (acked), failed (the attempt raised and dramatiq scheduled a "
            "retry, a new job), dead_lettered (dramatiq gave up, the runner could not set it up, "
            "past its max_age at claim, or the scaler gave up on its machines), requeued (given "
            "back to its queue by the scaler).",
            ["pool", "outcome"], registry=r)
        self.reaps = Counter(
            p + "reaps_total", "Machines destroyed by the reaper, by reason (stopped, failed, "
            "boot_timeout, max_runtime, stuck, orphan, invalid_options, unlisted, "
            "finished_lingering: its job finished but it did not exit within the orphan grace).",
            ["pool", "reason"],
            registry=r)
        self.requeues = Counter(
            p + "jobs_requeued_total", "Jobs given back to their queue, by reason.",
            ["pool", "reason"], registry=r)
        self.dead_letters = Counter(
            p + "jobs_dead_lettered_total", "Jobs dead-lettered, by reason: the scaler's "
            "(machine_gone and the other release reasons, invalid_options, fly_refused), "
            "max_age (past it at claim: no machine), setup (the runner could not run it) and "
            "job_failed (dramatiq gave up on it).",
            ["pool", "reason"], registry=r)

        # Decisions.
        self.decisions = Counter(
            p + "decisions_total", "Planner decisions by pool, kind and outcome.",
            ["pool", "kind", "outcome"], registry=r)
        self.decisions_not_taken = Counter(
            p + "decisions_not_taken_total", "Actions the planner wanted but did not take, by "
            "reason (cap_pool, cap_app, cap_global, rate_limit, budget, unknown_data; also waits "
            "such as create_pending, orphan_grace, no_demand).",
            ["pool", "reason"], registry=r)

        # Fly API and the rate governor.
        self.api_requests = Counter(
            p + "fly_api_requests_total", "Fly Machines API calls by action (operationId) and "
            "HTTP status code (\"error\" for transport errors).", ["action", "code"], registry=r)
        self.api_latency = Histogram(
            p + "fly_api_request_duration_seconds", "Fly Machines API call latency by action.",
            ["action"], buckets=API_BUCKETS, registry=r)
        self.governor_wait = Histogram(
            p + "governor_wait_seconds", "Time calls waited for rate-limit budget, by action.",
            ["action"], buckets=API_BUCKETS, registry=r)
        self.governor_waiting = Gauge(
            p + "governor_waiting_calls", "Calls waiting for rate-limit budget now, by action.",
            ["action"], registry=r)
        self.launches_waiting_budget = Gauge(
            p + "launches_waiting_for_budget", "Launches the planner deferred for lack of create "
            "budget in the last tick, per pool.", ["pool"], registry=r)

        # The loop.
        self.tick_duration = Histogram(
            p + "tick_duration_seconds", "Duration of one reconcile tick (observe, plan, act).",
            buckets=API_BUCKETS, registry=r)
        self.stage_duration = Histogram(
            p + "tick_stage_duration_seconds", "Duration of each stage of a tick.",
            ["stage"], buckets=API_BUCKETS, registry=r)
        self.ticks = Counter(
            p + "ticks_total", "Reconcile ticks by trigger (event, resync).", ["trigger"],
            registry=r)
        self.tick_errors = Counter(
            p + "tick_errors_total", "Errors during ticks by stage.", ["stage"], registry=r)
        self.data_unknown = Gauge(
            p + "data_unknown", "1 while a source could not be read (redis, fly:<app>, "
            "prometheus); the scaler then neither scales down nor reaps on it.",
            ["source"], registry=r)
        self.exit_waits = Counter(
            p + "exit_waits_total", "Waits for a finished job's machine to exit, by result "
            "(exited, gone, unanswered): an answered wait frees the machine's cap slot before "
            "the next listing.", ["result"], registry=r)
        self.listing_age = Gauge(
            p + "listing_age_seconds", "Age of the machine listing the last tick planned on, per "
            "app (a slow listing is refreshed in the background; never over max_list_age). "
            "Absent while the app's listing is unknown.", ["app"], registry=r)
        self.leader = Gauge(
            p + "leader", "1 if this replica holds the leader lease.", registry=r)
        self.leader_changes = Counter(
            p + "leader_changes_total", "Times this replica gained or lost the lease.",
            ["change"], registry=r)
        self.last_tick = Gauge(
            p + "last_tick_timestamp_seconds", "Unix time of the last completed tick.", registry=r)

        # Cost.
        self.machine_seconds = Counter(
            p + "machine_seconds_total", "Seconds our machines spent started, by pool and size.",
            ["pool", "size"], registry=r)
        self.cost = Counter(
            p + "estimated_cost_usd_total", "Estimated cost of started machine time in USD, by "
            "pool and size (list prices; see [costs]).", ["pool", "size"], registry=r)

        # Cost budgets (only with budgets set; scope is global, app or pool).
        self.spend_hour = Gauge(
            p + "spend_rolling_hour_usd", "Estimated USD spent in the rolling hour, by budget "
            "scope (global/app/pool) and name.", ["scope", "name"], registry=r)
        self.budget = Gauge(
            p + "budget_per_hour_usd", "The configured budget per rolling hour, by scope and "
            "name.", ["scope", "name"], registry=r)
        self.budget_remaining = Gauge(
            p + "budget_remaining_usd", "Budget left for new launches: the budget minus the "
            "rolling hour's spend and what launched machines are committed to; at or below the "
            "price of one launch, launches wait with reason budget.", ["scope", "name"],
            registry=r)
        self.job_cost = Histogram(
            p + "job_cost_usd", "Estimated cost of each finished job (its machine's started "
            "seconds up to the job's end, else its run time, x price), by pool.", ["pool"],
            buckets=JOB_COST_BUCKETS, registry=r)

        # The enqueue API.
        self.http_enqueued = Counter(
            p + "http_enqueued_total", "Messages accepted by the HTTP enqueue API by queue.",
            ["queue"], registry=r)
        self.http_rejected = Counter(
            p + "http_rejected_total", "Requests refused by the HTTP enqueue API by status code.",
            ["code"], registry=r)

        # GitHub Actions runners (github pools).
        g = p + "github_"
        self.github_deliveries = Counter(
            g + "webhook_deliveries_total", "Webhook deliveries by result: queued, started, "
            "completed, ignored, duplicate, refused, invalid_signature, malformed, too_large, "
            "error.", ["result"], registry=r)
        self.github_jobs_queued = Counter(
            g + "jobs_queued_total", "Workflow jobs queued for a pool's runners, by how they were "
            "learnt (webhook, resync).", ["pool", "source"], registry=r)
        self.github_jobs_refused = Counter(
            g + "jobs_refused_total", "Queued workflow jobs no pool takes, by reason (labels, "
            "repository, fork).", ["reason"], registry=r)
        self.github_runners_launched = Counter(
            g + "runners_launched_total", "Runner machines given a just-in-time config, by "
            "pool and result (registered, failed).", ["pool", "result"], registry=r)
        self.github_jobs_started = Counter(
            g + "jobs_started_total", "Workflow jobs a runner of ours started.", ["pool"],
            registry=r)
        self.github_jobs_completed = Counter(
            g + "jobs_completed_total", "Workflow jobs completed, by pool and whether a runner "
            "of ours ran them (ran) or they ended before any did (withdrawn).",
            ["pool", "outcome"], registry=r)
        self.github_queue_to_started = Histogram(
            g + "queue_to_started_seconds", "From a job's queued webhook to a runner of ours "
            "starting it.", ["pool"], buckets=LATENCY_BUCKETS, registry=r)
        self.github_runners_reaped = Counter(
            g + "runners_reaped_total", "Runner machines withdrawn by the scaler, by pool and "
            "reason (idle_timeout, surplus).", ["pool", "reason"], registry=r)
        self.github_api_calls = Counter(
            g + "api_calls_total", "GitHub API calls by operation and status code.",
            ["operation", "code"], registry=r)
        self.github_rate_remaining = Gauge(
            g + "rate_limit_remaining", "GitHub's remaining primary rate-limit budget as last "
            "reported (x-ratelimit-remaining).", registry=r)
        self.github_rate_limit = Gauge(
            g + "rate_limit", "GitHub's primary rate-limit budget per hour as last reported "
            "(x-ratelimit-limit).", registry=r)

    def initialize(
        self, pools: Sequence[str], queues: Sequence[str], actions: Sequence[str] = API_ACTIONS
    ) -> None:
        """Create every series whose labels are known in advance, at zero, so that rates and
        quantiles read 0 (not "no data") before the first event: Prometheus' advice on missing
        metrics. Everything here is bounded by the configured pools, queues and Fly actions."""
        for pool in pools:
            for result in LAUNCH_RESULTS:
                self.launches.labels(pool, result)
            for reason in REAP_REASONS:
                self.reaps.labels(pool, reason)
            for reason in RELEASE_REASONS:
                self.requeues.labels(pool, reason)
                self.dead_letters.labels(pool, reason)
            for reason in JOB_DEAD_LETTER_REASONS:
                self.dead_letters.labels(pool, reason)
            for outcome in ("done", "failed", "requeued", "dead_lettered"):
                self.jobs_finished.labels(pool, outcome)
            for reason in NOT_TAKEN_REASONS:
                self.decisions_not_taken.labels(pool, reason)
            self.enqueue_to_started.labels(pool)
            self.enqueue_to_launch.labels(pool)
            self.job_run.labels(pool)
            self.job_cost.labels(pool)
            self.launches_waiting_budget.labels(pool).set(0)
        for queue in queues:
            self.http_enqueued.labels(queue)
        for action in actions:
            self.api_requests.labels(action, "429")
            self.api_latency.labels(action)
            self.governor_wait.labels(action)
            self.governor_waiting.labels(action).set(0)
        for stage in ("observe", "plan", "act"):
            self.stage_duration.labels(stage)
        for stage in ("observe", "tick", "fenced"):
            self.tick_errors.labels(stage)
        for trigger in ("start", "event", "resync"):
            self.ticks.labels(trigger)
        for change in ("gained", "lost"):
            self.leader_changes.labels(change)
        for result in EXIT_WAIT_RESULTS:
            self.exit_waits.labels(result)
        for code in ("401", "403", "404", "413", "422"):
            self.http_rejected.labels(code)
        self.leader.set(0)

    def initialize_github(self, pools: Sequence[str]) -> None:
        """The GitHub series known in advance, at zero (called when github pools exist)."""
        for result in GITHUB_DELIVERY_RESULTS:
            self.github_deliveries.labels(result)
        for reason in ("labels", "repository", "fork"):
            self.github_jobs_refused.labels(reason)
        for pool in pools:
            for source in ("webhook", "resync"):
                self.github_jobs_queued.labels(pool, source)
            for result in ("registered", "failed"):
                self.github_runners_launched.labels(pool, result)
            for outcome in ("ran", "withdrawn"):
                self.github_jobs_completed.labels(pool, outcome)
            for reason in ("idle_timeout", "surplus"):
                self.github_runners_reaped.labels(pool, reason)
            self.github_jobs_started.labels(pool)
            self.github_queue_to_started.labels(pool)

    def observe_api_call(self, action: str, status: int | None, seconds: float) -> None:
        """Record one Fly API attempt (the Fly client's observer hook)."""
        self.api_requests.labels(action, str(status) if status is not None else "error").inc()
        self.api_latency.labels(action).observe(seconds)

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)
