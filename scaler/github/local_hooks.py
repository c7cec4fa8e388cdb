"""The local GitHub stand-in's webhooks: signed ``workflow_job`` deliveries to a configured URL.

:class:`WebhookSender` listens to a :class:`~scaler.github.local.LocalGitHub` and posts each job
change (``queued``, ``in_progress``, ``completed``) as GitHub does: a JSON body shaped as GitHub's
documented examples, headers ``X-GitHub-Event``, ``X-GitHub-Delivery`` (a new GUID per delivery),
``X-GitHub-Hook-ID`` and ``X-Hub-Signature-256`` (HMAC-SHA256 of the exact body with the webhook
secret, computed here, not with the scaler's own signing code). Deliveries go out one at a time,
in order, from a background thread, so the caller (an API request, a runner's report) never waits
on the receiver, as on GitHub.

Like GitHub it does not retry a failed delivery by itself; :meth:`WebhookSender.redeliver` sends
one again with the same GUID (GitHub's "Redeliver" button), and :meth:`WebhookSender.drop` loses
the next deliveries on purpose (recorded, never sent), to prove that a resync finds their jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from scaler.github.local import LocalGitHub
from scaler.secret import Secret

__all__ = ["Delivery", "WebhookSender"]

HOOK_ID = 424242
USER_AGENT = "GitHub-Hookshot/local"


@dataclass
class Delivery:
    """One delivery: what was (or would have been) sent and how the receiver answered."""

    guid: str
    event: str
    action: str | None
    job_id: int | None
    body: bytes
    status: int | None = None  # the receiver's answer; None when dropped or unreachable
    dropped: bool = False
    redelivery: bool = False
    error: str | None = None


class WebhookSender:
    """Posts ``state``'s job changes to ``url`` signed with ``secret`` (both settable later, as
    the receiver's port may only be known once it listens). Without a URL nothing is sent."""

    def __init__(self, state: LocalGitHub, url: str | None = None, secret: Secret | None = None,
                 *, timeout_s: float = 10.0) -> None:
        self.state = state
        self.url = url
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self._drop: list[str | None] = []  # one entry per delivery to lose: its action, or any
        self._lock = threading.Lock()
        self._queue: queue.Queue[Delivery | None] = queue.Queue()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._http = httpx.Client(timeout=timeout_s)
        self._thread = threading.Thread(target=self._run, name="local-github-hooks", daemon=True)
        self._thread.start()
        state.listeners.append(self._on_change)

    def configure(self, url: str, secret: Secret) -> None:
        """Send from now on to ``url``, signed with ``secret``."""
        self.url, self.secret = url, secret

    def drop(self, count: int = 1, action: str | None = None) -> None:
        """Lose the next ``count`` deliveries (of ``action`` only, if given)."""
        with self._lock:
            self._drop.extend([action] * count)

    def ping(self) -> Delivery:
        """Send the ``ping`` GitHub sends when a webhook is created."""
        payload = {"zen": "Keep it logically awesome.", "hook_id": HOOK_ID,
                   "hook": {"type": "App", "id": HOOK_ID, "active": True,
                            "events": ["workflow_job"]}}
        return self._enqueue("ping", None, None, payload)

    def redeliver(self, guid: str) -> Delivery:
        """Send delivery ``guid`` again, same body and GUID, as GitHub's redelivery does."""
        with self._lock:
            original = next(d for d in self.deliveries if d.guid == guid)
        again = Delivery(original.guid, original.event, original.action, original.job_id,
                         original.body, redelivery=True)
        self._submit(again)
        return again

    def of_job(self, job_id: int) -> list[Delivery]:
        """The deliveries about ``job_id``, oldest first."""
        with self._lock:
            return [d for d in self.deliveries if d.job_id == job_id]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every delivery so far was sent (or dropped); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Stop sending (deliveries still queued are not sent)."""
        self.state.listeners[:] = [f for f in self.state.listeners if f != self._on_change]
        self._queue.put(None)
        self._thread.join(timeout=15)
        self._http.close()

    # -- inside ---------------------------------------------------------------------------------

    def _on_change(self, job_id: int, action: str) -> None:
        # Called under the state's lock: the payload is the job as it is at this change.
        if self.url is None:
            return
        self._enqueue("workflow_job", action, job_id, self.state.webhook_payload(job_id, action))

    def _enqueue(self, event: str, action: str | None, job_id: int | None,
                 payload: dict[str, Any]) -> Delivery:
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery = Delivery(str(uuid.uuid4()), event, action, job_id, body)
        with self._lock:
            lose = next((i for i, a in enumerate(self._drop) if a is None or a == action), None)
            if event != "ping" and lose is not None:
                del self._drop[lose]
                delivery.dropped = True
        self._submit(delivery)
        return delivery

    def _submit(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
            if delivery.dropped:
                return
            self._pending += 1
        self._queue.put(delivery)

    def _run(self) -> None:
        while (delivery := self._queue.get()) is not None:
            try:
                self._send(delivery)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _send(self, delivery: Delivery) -> None:
        url, secret = self.url, self.secret
        if url is None or secret is None:
            delivery.error = "no webhook URL or secret configured"
            return
        # Signed here with plain hmac, not scaler.github.signature.sign: the stand-in is the
        # independent side the scaler's verify() is tested against.
        digest = hmac.new(secret.get_secret_value().encode(), delivery.body,
                          hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-GitHub-Event": delivery.event, "X-GitHub-Delivery": delivery.guid,
                   "X-GitHub-Hook-ID": str(HOOK_ID),
                   "X-GitHub-Hook-Installation-Target-Type": "integration",
                   "X-Hub-Signature-256": f"sha256={digest}"}
        try:
            answer = self._http.post(url, content=delivery.body, headers=headers)
        except httpx.HTTPError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
            return
        delivery.status = answer.status_code
