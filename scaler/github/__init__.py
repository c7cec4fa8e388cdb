"""GitHub Actions runners on ephemeral Fly machines: ``mode = "github"`` pools (issue 13).

A queued workflow job becomes one message of its pool's queue, so per-job dispatch launches one
machine for it under the same caps, Fly rate limits, retries and reaping as any per-job job; the
machine runs GitHub's runner with a just-in-time config and exits after one job. README "GitHub
Actions runners" is the user's view; this is the maintainer's.

How it is wired
===============

``webhook`` (``POST /v1/webhooks/github`` on the scaler's HTTP port, mounted by
:mod:`scaler.http.app` when a github pool exists)
    size (413), signature (401), then parse (400); ``ping``/other events 200 ``ignored``;
    redelivery 200 ``duplicate``; ``queued`` routed (``routing``) and written by the ledger, a
    refusal logged and counted; ``in_progress``/``completed`` recorded. Redis failing: the
    delivery is forgotten and the answer is 503, so GitHub's redelivery acts on it.
``ledger`` (Redis: ``{p}:github:*``)
    a job is a message ``github-job-{id}`` (idempotent); runners are *counted*, not bound to jobs:
    a runner that finishes any job ends the claim it was launched under (its machine then exits,
    or is destroyed as ``finished_lingering`` after ``orphan_grace``); a job that ends before any
    runner of ours took it withdraws its waiting message. The observer reads from it the pool's
    jobs still queued on GitHub and which runners are busy.
``demand``
    the count kept whole: after each ``in_progress`` of a runner of ours and each resync, jobs
    still queued beyond the pool's waiting messages and idle runners get replacement messages (a
    runner that took a job whose webhook was lost used up another job's message); a job that a
    listing no longer shows is treated as completed.
``scaler.policy.runners`` (pure)
    idle runners plus waiting messages beyond the jobs GitHub still has queued are surplus and
    withdrawn (not-started ones first; a started one only after 30 s online); a runner given no job
    within ``github.runner_idle_timeout`` is destroyed and its job given back.
``launcher`` (called by :mod:`scaler.loop.act` before each runner machine's create)
    ``generate_jitconfig`` named after the machine, with the pool's labels and group (a 409 after
    a crash: remove and register again); the config goes into that machine's env as
    ``GITHUB_RUNNER_JITCONFIG``, the pool's env beside it, no ``FLY_SCALER_*`` binding, Fly app
    secrets skipped. A GitHub error backs the claim off like a failed create. Destroying a runner
    machine removes its registration.
``runtime``
    assembles the above from the settings for :mod:`scaler.loop.service`, and runs the resync:
    the queued jobs of the allowed repositories listed at start-up and every
    ``github.resync_interval`` while leading, each routed and queued as its webhook would have
    been (a job whose webhook was lost gets its runner). API calls and the remaining budget are
    metrics (``fly_scaler_github_*``).

The webhook secret, the App's key and a token are registered with the log redactor; JIT configs
and installation tokens are not (they rotate, and the registry would grow without bound): they
stay :class:`~scaler.secret.Secret` until the one place each leaves the process, and tests with
canaries hold that they reach no log, metric, metadata or other machine.

The pieces
==========

``signature``
    ``verify(secret, body, header)``: ``X-Hub-Signature-256`` (``sha256=`` + hex HMAC-SHA256 of
    the raw body), constant-time, before anything is parsed. ``SignatureError.reason`` is
    ``missing``, ``malformed`` or ``mismatch``.
``events``
    ``read_delivery(secret, headers, body)``: size (``MAX_BODY_BYTES``, 1 MiB), signature, then
    JSON into a ``WorkflowJobEvent`` (action, job and run ids, labels, repository, owner,
    organization, fork, installation, runner once assigned, conclusion). ``ping``, other events
    and unknown actions come back as ``Ignored``; a malformed body raises ``MalformedDelivery``
    naming the field.
``routing``
    ``route(event, rules) -> Routed | Refused``: the first ``RunnerPoolRule`` serving all of the
    job's labels (``self-hosted`` implied), for an allowed repository or owner, and not a fork
    unless allowed. Refusal reasons: ``labels``, ``repository``, ``fork``.
``deliveries``
    ``Deliveries(redis, prefix).seen(delivery_id)``: redelivery dedupe, ``SET NX`` with a 3-day
    TTL at ``{prefix}:github:delivery:{id}``; ``forget`` when acting on it failed.
``client`` (with ``auth``, ``ratelimit``, ``models``, ``errors``)
    ``GitHubClient(AppAuth(app_id, private_key, installation_id) | TokenAuth(token),
    api_url=...)``: ``generate_jitconfig``, ``list_queued_jobs``, ``list_runners``,
    ``remove_runner``. Installation tokens cached until 5 minutes before expiry; rate limits
    honoured as GitHub documents them (``retry-after``, the reset of a spent budget, secondary
    limits), waits on an injectable clock, ``RateLimited(retry_at)`` beyond ``max_wait_s``;
    ``budget`` for a metric. Secrets stay ``Secret``: canary tests hold it.
``local``, ``local_server``, ``pytest_plugin``, ``testing``
    A local GitHub stand-in over real HTTP (installation tokens for a checked App JWT,
    generate-jitconfig, runs and jobs, runners, forced 403/429 limits, an admin side, payloads
    in GitHub's documented shapes, ``webhook_payload`` for deliveries) and its fixtures
    (``github_api``, ``github_api_factory``, ``github_app_key``, ``github_clock``).
``local_hooks``, ``local_broker``, ``local_runner``
    The stand-in as GitHub behaves towards a runner service: signed ``workflow_job`` webhooks
    (queued, in_progress, completed) to a URL, droppable and redeliverable; queued jobs given to
    any idle registered runner whose labels match, re-queued when not picked up within 60 s; and
    ``python -m scaler.github.local_runner``, the runner a machine runs under ``scaler dev
    --github`` (reads ``GITHUB_RUNNER_JITCONFIG`` only, takes one job, exits 0).
"""
