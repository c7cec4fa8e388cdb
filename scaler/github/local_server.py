"""The local GitHub stand-in over real HTTP: the endpoints the runner client uses, an admin side,
and :class:`LocalGitHubServer`, which serves it with uvicorn on a background thread.

GitHub's side (under ``path_prefix``: empty as on github.com, ``/api/v3`` as on GitHub Enterprise
Server):

- ``POST /app/installations/{id}/access_tokens``: checks the App's JWT (RS256 against the App's
  public key, ``iss`` the App id, ``exp`` at most 10 minutes ahead, ``iat`` not ahead) and issues
  an installation token that lapses after ``token_ttl_s``;
- ``POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig`` and ``/orgs/{org}/...``;
- ``GET .../actions/runners``, ``DELETE .../actions/runners/{id}``;
- ``GET /repos/{owner}/{repo}/actions/runs?status=``, ``.../runs/{run_id}/jobs`` and
  ``.../jobs/{job_id}``;
- ``GET /installation/repositories`` (an installation token only) and ``GET /orgs/{org}/repos``
  (a JSON array): the repositories known from the jobs queued, or given to the installation;

listings paginated with ``per_page``/``page`` and ``Link`` headers.

Every call needs a valid token, spends the credential's budget and carries ``x-ratelimit-*``
headers; forced limits (:class:`~scaler.github.local.ForcedLimit`) answer 403 or 429 as GitHub
does. Admin side, unauthenticated, loopback only: ``POST /_local/jobs`` (``repository``,
``labels``, ``name``), ``GET /_local/runners``, ``POST /_local/rate-limits`` (a ``ForcedLimit``'s
fields and ``count``), ``GET /_local/requests``, ``POST /_local/jobs/{id}/cancel``, ``GET
/_local/webhooks`` (the deliveries), ``POST /_local/webhooks/drop`` (``count``, ``action``),
``POST /_local/webhooks/{guid}/redeliver``.

The runner side (:mod:`scaler.github.local_broker`) is served under ``/_runner``; webhooks go out
through :mod:`scaler.github.local_hooks` once :meth:`LocalGitHubServer.hooks` has a URL.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from scaler.github.local import DOCS, ForcedLimit, LocalGitHub, Problem
from scaler.github.local_broker import PICKUP_TIMEOUT_S, RunnerBroker, broker_routes
from scaler.github.local_hooks import WebhookSender
from scaler.secret import Secret

__all__ = ["LocalGitHubServer", "create_app"]

JWT_MAX_AHEAD_S = 600
CLOCK_SLACK_S = 60
Handler = Callable[[Request], Awaitable[Response]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status, headers=headers)


def _problem(exc: Problem) -> JSONResponse:
    body = {"message": exc.message, "documentation_url": DOCS, "status": str(exc.status)}
    return _json(body, exc.status, exc.headers)


def _bearer(request: Request) -> str:
    kind, _, value = request.headers.get("authorization", "").partition(" ")
    if kind.lower() not in ("bearer", "token") or not value.strip():
        raise Problem(401, "Requires authentication")
    return value.strip()


def _scope(request: Request) -> tuple[str, str]:
    params = request.path_params
    if "org" in params:
        return ("org", str(params["org"]).lower())
    return ("repo", f"{params['owner']}/{params['repo']}".lower())


def _page(request: Request, items: list[Any], key: str | None,
          extra: dict[str, Any] | None = None) -> JSONResponse:
    """One page of ``items`` as ``{"total_count", key: [...], **extra}`` (a bare array without
    ``key``) with GitHub's ``Link`` header."""
    try:
        per_page = max(1, min(100, int(request.query_params.get("per_page", "30"))))
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        raise Problem(422, "per_page and page must be integers") from None
    last = max(1, -(-len(items) // per_page))
    headers = {}
    if page < last:
        links = [(page + 1, "next"), (last, "last")]
        headers["link"] = ", ".join(
            f'<{request.url.include_query_params(per_page=per_page, page=n)}>; rel="{rel}"'
            for n, rel in links
        )
    chunk = items[(page - 1) * per_page:page * per_page]
    if key is None:
        return _json(chunk, 200, headers)
    return _json({"total_count": len(items), **(extra or {}), key: chunk}, 200, headers)


def _jit_request(body: Any) -> tuple[str, list[str]]:
    if not isinstance(body, dict):
        raise Problem(422, "Invalid request.\n\nThe body must be a JSON object.")
    name, group, labels = body.get("name"), body.get("runner_group_id"), body.get("labels")
    if not isinstance(name, str) or not name:
        raise Problem(422, "Invalid request.\n\n\"name\" is required and must be a string.")
    if not isinstance(group, int) or isinstance(group, bool):
        raise Problem(422, "Invalid request.\n\n\"runner_group_id\" must be an integer.")
    if (not isinstance(labels, list) or not 1 <= len(labels) <= 100
            or not all(isinstance(label, str) and label for label in labels)):
        raise Problem(422, "Invalid request.\n\n\"labels\" must be 1 to 100 strings.")
    if not isinstance(body.get("work_folder", ""), str):
        raise Problem(422, "Invalid request.\n\n\"work_folder\" must be a string.")
    return name, labels


def create_app(state: LocalGitHub, public_key: RSAPublicKey, path_prefix: str = "",
               broker: RunnerBroker | None = None, hooks: WebhookSender | None = None
               ) -> Starlette:
    """The ASGI app serving ``state``; App JWTs are checked against ``public_key``; the runner
    routes with ``broker`` and the webhook admin routes with ``hooks``."""

    def check_jwt(token: str) -> None:
        try:
            claims = jwt.decode(token, public_key, algorithms=["RS256"],
                                options={"verify_exp": False, "verify_iat": False,
                                         "require": ["iat", "exp", "iss"]})
        except jwt.PyJWTError:
            raise Problem(401, "A JSON web token could not be decoded") from None
        now = state.clock()
        if str(claims["iss"]) != state.app_id:
            raise Problem(401, "Integration not found")
        if not now < claims["exp"] <= now + JWT_MAX_AHEAD_S + CLOCK_SLACK_S:
            raise Problem(401, "'Expiration time' claim ('exp') must be a numeric value "
                               "representing the future time at which the assertion expires")
        if claims["iat"] > now + CLOCK_SLACK_S:
            raise Problem(401, "'Issued at' claim ('iat') must be an Integer representing the "
                               "time that the assertion was issued")

    def api(handler: Callable[[Request], Awaitable[tuple[int, Any]]], *, app_jwt: bool = False
            ) -> Handler:
        async def endpoint(request: Request) -> Response:
            kind = "jwt" if app_jwt else "token"
            with state.lock:
                state.requests.append((request.method, request.url.path, kind))
            try:
                token = _bearer(request)
                if app_jwt:
                    check_jwt(token)
                    credential = "app"
                else:
                    credential = state.credential(token)
                headers = state.spend(credential)
                request.state.credential = credential
                status, body = await handler(request)
            except Problem as exc:
                return _problem(exc)
            if isinstance(body, Response):
                body.headers.update(headers)
                return body
            return Response(status_code=status, headers=headers) if body is None \
                else _json(body, status, headers)
        return endpoint

    async def access_token(request: Request) -> tuple[int, Any]:
        return 201, state.issue_token(int(request.path_params["installation_id"]))

    async def jitconfig(request: Request) -> tuple[int, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "Problems parsing JSON") from None
        name, labels = _jit_request(body)
        with state.lock:
            state.jit_requests.append(body)
        return 201, state.register_runner(_scope(request), name, labels)

    async def runners(request: Request) -> tuple[int, Any]:
        return 200, _page(request, state.list_runners(_scope(request)), "runners")

    async def remove(request: Request) -> tuple[int, Any]:
        state.remove_runner(_scope(request), int(request.path_params["runner_id"]))
        return 204, None

    async def runs(request: Request) -> tuple[int, Any]:
        found = state.list_runs(_scope(request)[1], request.query_params.get("status"))
        return 200, _page(request, found, "workflow_runs")

    async def jobs(request: Request) -> tuple[int, Any]:
        found = state.list_jobs(_scope(request)[1], int(request.path_params["run_id"]))
        if request.query_params.get("filter", "latest") not in ("latest", "all"):
            raise Problem(422, "filter must be latest or all")
        return 200, _page(request, found, "jobs")

    async def job(request: Request) -> tuple[int, Any]:
        return 200, state.get_job(_scope(request)[1], int(request.path_params["job_id"]))

    async def installation_repos(request: Request) -> tuple[int, Any]:
        selection, found = state.list_installation_repositories(request.state.credential)
        return 200, _page(request, found, "repositories", {"repository_selection": selection})

    async def org_repos(request: Request) -> tuple[int, Any]:
        if request.query_params.get("type", "all") not in (
                "all", "public", "private", "forks", "sources", "member"):
            raise Problem(422, "type is not one of all, public, private, forks, sources, member")
        return 200, _page(request, state.list_org_repositories(_scope(request)[1]), None)

    async def admin_jobs(request: Request) -> Response:
        body = await request.json()
        job = state.queue_job(body["repository"], body["labels"], name=body.get("name", "build"),
                              event=body.get("event", "push"),
                              head_repository=body.get("head_repository"))
        return _json(job, 201)

    async def admin_runners(request: Request) -> Response:
        return _json({"runners": state.all_runners()})

    async def admin_limits(request: Request) -> Response:
        body = dict(await request.json())
        count = int(body.pop("count", 1))
        state.force_limit(ForcedLimit(**body), count)
        return Response(status_code=204)

    async def admin_requests(request: Request) -> Response:
        with state.lock:
            return _json([list(r) for r in state.requests])

    async def admin_cancel(request: Request) -> Response:
        if broker is None:
            return _json({"message": "no runner broker"}, 404)
        broker.cancel(int(request.path_params["job_id"]))
        return Response(status_code=204)

    async def admin_webhooks(request: Request) -> Response:
        if hooks is None:
            return _json([])
        return _json([{"guid": d.guid, "event": d.event, "action": d.action, "job_id": d.job_id,
                       "status": d.status, "dropped": d.dropped, "redelivery": d.redelivery}
                      for d in list(hooks.deliveries)])

    async def admin_drop(request: Request) -> Response:
        body = dict(await request.json())
        if hooks is not None:
            hooks.drop(int(body.get("count", 1)), body.get("action"))
        return Response(status_code=204)

    async def admin_redeliver(request: Request) -> Response:
        if hooks is None:
            return _json({"message": "no webhooks"}, 404)
        try:
            again = hooks.redeliver(str(request.path_params["guid"]))
        except StopIteration:
            return _json({"message": "Not Found"}, 404)
        return _json({"guid": again.guid}, 202)

    repo, org = "/repos/{owner}/{repo}/actions", "/orgs/{org}/actions"
    routes: list[BaseRoute] = [
        Route("/app/installations/{installation_id:int}/access_tokens",
              api(access_token, app_jwt=True), methods=["POST"]),
        *[Route(f"{base}/runners/generate-jitconfig", api(jitconfig), methods=["POST"])
          for base in (repo, org)],
        *[Route(f"{base}/runners", api(runners), methods=["GET"]) for base in (repo, org)],
        *[Route(f"{base}/runners/{{runner_id:int}}", api(remove), methods=["DELETE"])
          for base in (repo, org)],
        Route(f"{repo}/runs", api(runs), methods=["GET"]),
        Route(f"{repo}/runs/{{run_id:int}}/jobs", api(jobs), methods=["GET"]),
        Route(f"{repo}/jobs/{{job_id:int}}", api(job), methods=["GET"]),
        Route("/installation/repositories", api(installation_repos), methods=["GET"]),
        Route("/orgs/{org}/repos", api(org_repos), methods=["GET"]),
    ]
    admin: list[BaseRoute] = [
        Route("/_local/jobs", admin_jobs, methods=["POST"]),
        Route("/_local/runners", admin_runners, methods=["GET"]),
        Route("/_local/rate-limits", admin_limits, methods=["POST"]),
        Route("/_local/requests", admin_requests, methods=["GET"]),
        Route("/_local/jobs/{job_id:int}/cancel", admin_cancel, methods=["POST"]),
        Route("/_local/webhooks", admin_webhooks, methods=["GET"]),
        Route("/_local/webhooks/drop", admin_drop, methods=["POST"]),
        Route("/_local/webhooks/{guid}/redeliver", admin_redeliver, methods=["POST"]),
        *(broker_routes(broker) if broker is not None else []),
    ]
    api_routes = [Mount(path_prefix, routes=routes)] if path_prefix else routes
    return Starlette(routes=[*admin, *api_routes])


class _Server(uvicorn.Server):
    """uvicorn's server, telling ``started`` once it listens (an event, not a polled flag)."""

    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started_event = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._started_event.set()


class LocalGitHubServer:
    """Serve a :class:`~scaler.github.local.LocalGitHub` on a free loopback port until
    :meth:`close`. ``url`` is the API root to give the client (``path_prefix`` included)."""

    def __init__(
        self,
        public_key: RSAPublicKey,
        *,
        app_id: str = "1",
        installations: Iterable[int] = (1,),
        static_tokens: Iterable[str] = (),
        token_ttl_s: float = 3600.0,
        rate_limit: int = 5000,
        clock: Callable[[], float] = time.time,
        path_prefix: str = "",
        webhook_url: str | None = None,
        webhook_secret: Secret | None = None,
        pickup_timeout_s: float = PICKUP_TIMEOUT_S,
        installation_repositories: Mapping[int, Iterable[str]] | None = None,
    ) -> None:
        self.state = LocalGitHub(app_id=app_id, installations=installations,
                                 static_tokens=static_tokens, token_ttl_s=token_ttl_s,
                                 rate_limit=rate_limit, clock=clock,
                                 installation_repositories=installation_repositories)
        self.path_prefix = path_prefix.rstrip("/")
        self.broker = RunnerBroker(self.state, pickup_timeout_s)
        self.hooks = WebhookSender(self.state, webhook_url, webhook_secret)
        app = create_app(self.state, public_key, self.path_prefix, self.broker, self.hooks)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port: int = sock.getsockname()[1]
        self.state.server_url = f"http://127.0.0.1:{self.port}"
        self._started = threading.Event()
        self._server = _Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                              lifespan="off"), self._started)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="local-github", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error is not None or not self._server.started:
            self.close()
            raise RuntimeError(f"the local GitHub stand-in did not start: {self._error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported to the constructor
            self._error = exc
        finally:
            self._started.set()  # a server that failed to start must not keep its caller waiting

    @property
    def root(self) -> str:
        """``http://127.0.0.1:PORT`` (the admin side is under it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The API root: ``root`` plus ``path_prefix``."""
        return self.root + self.path_prefix

    def close(self) -> None:
        """Stop serving (idempotent)."""
        self.hooks.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> LocalGitHubServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalGitHubServer(url={self.url!r})"
