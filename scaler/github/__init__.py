"""GitHub Actions runners on ephemeral Fly machines (issue 13): the standalone pieces.

Nothing here is wired into the loop yet. Each piece is tested on its own (``tests/test_github_*``:
real HTTP to the local stand-in, the real Redis); the next step wires them in.

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

What remains to wire
====================

1. **The webhook route** on the scaler's HTTP port (``scaler/http``), e.g. ``POST
   /github/webhook``: read at most ``MAX_BODY_BYTES`` (413), ``read_delivery`` (401 on a
   signature error, 400 malformed), ``Deliveries.seen`` (a duplicate is 200 and nothing more),
   record the job in Redis and wake the loop, and answer quickly: GitHub counts a delivery not
   answered within 10 s as failed and never retries it by itself. Metrics: deliveries by result,
   refusals by ``RefusalReason``, the client's ``budget.remaining``. The delivery key joins the
   table in ``scaler/jobs/keys.py``.
2. **Configuration** (``scaler/config``): ``mode = "github"`` pools with labels, repositories
   and/or organizations, ``allow_forks``, the runner scope (repository or organization) and
   runner group, plus a ``[github]`` section: ``api_url``, the App (``app_id``,
   ``installation_id``, private key from the secrets file) or a token, the webhook secret. Each
   pool becomes a ``RunnerPoolRule``; the webhook secret and the private key are registered with
   the log redaction like the Fly token. The JIT configs and installation tokens are not: they
   rotate, and the registry would grow without bound.
3. **Plan and act** (``scaler/policy``, ``scaler/loop``): a routed ``queued`` job is demand for
   its pool, under the same caps and Fly rate limits as per-job pools. GitHub gives a queued job
   to *any* idle runner whose labels match, so a runner launched for job A may run job B: plan
   by the count of queued jobs per pool, not a binding per job, and reconcile by runner name
   from ``in_progress`` events. Act: ``generate_jitconfig`` with ``rule.runner_labels()`` and a
   deterministic runner name (the machine's name, so a 409 after a crash means "already
   registered": remove and regenerate), then a machine with ``auto_destroy`` whose runner runs
   one job with the config and exits. The config is a secret on its way to the machine, never
   in its metadata. ``completed`` ends the accounting; the reaper removes runners whose machine
   is gone (``list_runners`` + ``remove_runner``) and destroys machines whose runner never came
   online. Webhooks can be lost: a resync calls ``list_queued_jobs`` for each allowed repository
   (it spends the GitHub budget: one call per run), and a job of a pull request whose
   ``head_repository`` differs from its repository is a fork's, refused unless allowed.
4. **The runner image** in ``deploy/``: GitHub's actions/runner, its entrypoint
   ``./run.sh --jitconfig "$JIT_CONFIG"`` (the variable is ours to name; a JIT runner is
   ephemeral: it takes one job and deregisters).
5. **``scaler dev --github``**: start the stand-in, queue jobs on it, deliver signed
   ``webhook_payload`` bodies to the scaler, and play the runner a machine would be
   (``start_job`` / ``complete_job``), since its JIT configs are not real ones.
6. **Docs**: README (setting up the GitHub App: permissions *Administration: write* for
   repository runners or *Self-hosted runners: write* for organization ones, *Actions: read*;
   the ``workflow_job`` webhook), ``docs/architecture.md`` (this package in the module table).
"""
