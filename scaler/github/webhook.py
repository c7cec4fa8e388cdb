"""``POST /v1/webhooks/github``: GitHub's ``workflow_job`` deliveries into runner demand.

The order, so nothing unverified is parsed and nothing is acted on twice:

1. the body, at most :data:`~scaler.github.events.MAX_BODY_BYTES` (413 beyond);
2. the ``X-Hub-Signature-256`` over the raw bytes, constant-time (401: missing, malformed or not
   matching; nothing else is read);
3. the headers and JSON (400 naming the field; nothing changes);
4. ``ping``, other events and other actions: 200 ``ignored``;
5. the delivery id, once (a redelivery: 200 ``duplicate``, nothing more);
6. the action: ``queued`` is routed to a pool (:mod:`scaler.github.routing`) and becomes a
   message of its queue (a refusal is logged with its reason, counted and answered 200: GitHub
   should not retry it); ``in_progress`` and ``completed`` update the
   :class:`~scaler.github.ledger.Ledger`.

Every answer is JSON ``{"result": ...}`` and is given as soon as Redis has the change (GitHub
counts a delivery not answered within 10 s as failed). When Redis fails, the delivery id is
forgotten and the answer is 503, so a redelivery acts on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from scaler.github.deliveries import Deliveries
from scaler.github.demand import top_up
from scaler.github.events import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    Ignored,
    JobAction,
    MalformedDelivery,
    WorkflowJobEvent,
    read_delivery,
)
from scaler.github.ledger import JobRef, Ledger
from scaler.github.routing import Refused, RunnerPoolRule, route
from scaler.github.signature import SignatureError
from scaler.http.responses import Problem
from scaler.http.validation import read_body
from scaler.secret import Secret
from scaler.telemetry.metrics import Metrics

__all__ = ["PATH", "GitHubWebhook"]

PATH = "/v1/webhooks/github"

log = structlog.get_logger(__name__)


class GitHubWebhook:
    """The webhook endpoint (:meth:`handle`); see the module docstring.

    ``rules`` are the github pools' routing rules in configuration order; ``queues`` maps each
    github pool to its queue.
    """

    def __init__(
        self,
        *,
        secret: Secret,
        rules: Sequence[RunnerPoolRule],
        queues: Mapping[str, str],
        ledger: Ledger,
        deliveries: Deliveries,
        metrics: Metrics,
    ) -> None:
        if not secret:
            raise ValueError("the GitHub webhook needs its secret")
        self._secret = secret
        self._rules = tuple(rules)
        self._queues = dict(queues)
        self._ledger = ledger
        self._deliveries = deliveries
        self._metrics = metrics

    def _answer(self, result: str, status: int = 200, **extra: object) -> Response:
        self._metrics.github_deliveries.labels(result).inc()
        return JSONResponse({"result": result, **extra}, status_code=status)

    def _refuse(self, result: str, status: int, code: str, message: str) -> Response:
        self._metrics.github_deliveries.labels(result).inc()
        return Problem(status, code, message).response()

    async def handle(self, request: Request) -> Response:
        """Answer one delivery."""
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except Problem as exc:
            result = "too_large" if exc.status == 413 else "malformed"
            self._metrics.github_deliveries.labels(result).inc()
            log.warning("github webhook refused", result=result, reason=exc.message)
            return exc.response()
        try:
            delivery = read_delivery(self._secret, request.headers, body)
        except SignatureError as exc:
            log.warning("github webhook refused: bad signature", reason=exc.reason)
            return self._refuse("invalid_signature", 401, "invalid_signature",
                                f"X-Hub-Signature-256 {exc.reason}: check that the webhook's "
                                "secret is the scaler's github.webhook_secret")
        except BodyTooLarge as exc:
            return self._refuse("too_large", 413, "too_large", str(exc))
        except MalformedDelivery as exc:
            log.warning("github webhook refused: malformed", field=exc.field,
                        problem=exc.problem)
            return self._refuse("malformed", 400, "malformed", str(exc))
        if isinstance(delivery, Ignored):
            return self._answer("ignored", event=delivery.event, reason=delivery.reason)
        try:
            if await self._deliveries.seen(delivery.delivery_id):
                return self._answer("duplicate")
            try:
                return await self._act(delivery)
            except BaseException:
                await self._deliveries.forget(delivery.delivery_id)
                raise
        except RedisError as exc:
            log.error("github webhook not recorded: Redis failed", error=type(exc).__name__,
                      delivery=delivery.delivery_id, job_id=delivery.job_id)
            return self._refuse("error", 503, "unavailable",
                                "Redis is unavailable; the delivery was not recorded, redeliver "
                                "it")

    async def _act(self, event: WorkflowJobEvent) -> Response:
        if event.action == JobAction.QUEUED:
            return await self._queued(event)
        routable = not isinstance(route(event, self._rules), Refused)
        if event.action == JobAction.IN_PROGRESS:
            pool, waited = await self._ledger.started(event.job_id, event.runner_name,
                                                      routable=routable)
            # The count may have moved either way (a runner of ours took a job with no message,
            # or a runner not ours took one with a message): balance every runner pool.
            for name, queue in self._queues.items():
                await top_up(self._ledger, name, queue)
            if pool is not None:
                self._metrics.github_jobs_started.labels(pool).inc()
                if waited is not None:
                    self._metrics.github_queue_to_started.labels(pool).observe(max(0.0, waited))
                log.info("github job started", pool=pool, job_id=event.job_id,
                         runner=event.runner_name, waited_s=waited)
            return self._answer("started")
        if event.action == JobAction.COMPLETED:
            pool, outcome = await self._ledger.completed(
                event.job_id, event.runner_name, self._queues, routable=routable)
            if pool is not None:
                self._metrics.github_jobs_completed.labels(pool, outcome).inc()
                log.info("github job completed", pool=pool, job_id=event.job_id,
                         runner=event.runner_name, outcome=outcome,
                         conclusion=event.conclusion)
            return self._answer("completed", outcome=outcome if pool else "not_ours")
        return self._answer("ignored", reason="waiting")

    async def _queued(self, event: WorkflowJobEvent) -> Response:
        routed = route(event, self._rules)
        if isinstance(routed, Refused):
            self._metrics.github_jobs_refused.labels(routed.reason.value).inc()
            log.warning("github job refused", reason=routed.reason.value, job_id=event.job_id,
                        repository=event.repository, labels=list(event.labels),
                        fork=event.fork)
            return self._answer("refused", reason=routed.reason.value)
        pool = routed.pool
        created = await self._ledger.queue(
            pool, self._queues[pool],
            JobRef(event.job_id, event.run_id, event.repository, event.labels),
        )
        if created:
            self._metrics.github_jobs_queued.labels(pool, "webhook").inc()
            log.info("github job queued", pool=pool, job_id=event.job_id,
                     repository=event.repository)
        return self._answer("queued", status=202 if created else 200, pool=pool)


def pool_rules(pools: Sequence[object]) -> tuple[list[RunnerPoolRule], dict[str, str]]:
    """The routing rules and queues of the github pools among ``pools`` (``PoolSpec``s)."""
    from scaler.config import PoolSpec

    rules, queues = [], {}
    for p in pools:
        if isinstance(p, PoolSpec) and p.is_github:
            rules.append(RunnerPoolRule(p.name, p.labels, p.repositories, p.organizations,
                                        p.allow_forks))
            queues[p.name] = p.queues[0]
    return rules, queues
