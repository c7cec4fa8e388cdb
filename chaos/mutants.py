"""Deliberately broken builds: small named source changes to the scaler or the runner, each
breaking one invariant a scenario measures. ``python -m chaos --only R4 --mutant unfenced`` must
FAIL: that is how a scenario proves it can fail.

Each mutant is a list of ``(path, old_text, new_text)`` applied to a copy of the current ``scaler/``
and ``workers/`` (see :mod:`chaos.tree`). ``old_text`` must occur exactly once: when the code it
targets changed, the mutant is *stale* and says so (update it here), never silently a no-op.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MUTANTS", "MutantError", "apply_mutant"]

Edit = tuple[str, str, str]

MUTANTS: dict[str, list[Edit]] = {
    # R1: a machine whose create was never recorded is adopted by nobody: the scaler does not
    # look it up by name or job metadata, its runner may not take an unrecorded claim, names are
    # not deterministic and the create window is 3 s: a restarted scaler creates a second one.
    "no-adopt": [
        ("scaler/jobs/claim_scripts.py", "if owner and owner ~= ARGV[2] then return 0 end",
         "if owner ~= ARGV[2] then return 0 end"),
        ("scaler/policy/index.py", "    m = idx.by_name.get(c.machine_name)\n",
         "    m = None\n"),
        ("scaler/policy/index.py", "    return idx.by_job.get((c.job, c.launch))\n",
         "    return None\n"),
        ("scaler/loop/machines.py", "        name=claim.machine_name,\n",
         "        name=f\"{claim.machine_name}-{uuid.uuid4().hex[:4]}\",\n"),
        ("scaler/loop/act.py", "CREATE_WINDOW_S = 30.0\n", "CREATE_WINDOW_S = 3.0\n"),
    ],
    # R2: an ambiguous create (408, 5xx, dropped) is retried blindly, without looking it up.
    "no-name-lookup": [
        ("scaler/fly/_transport.py",
         "if call.safety is Safety.CREATE and (is_ambiguous(exc) or conflict):",
         "if call.safety is Safety.CREATE and conflict:"),
        ("scaler/fly/retry.py", "    if safety in (Safety.IDEMPOTENT, Safety.WAIT):\n",
         "    if safety in (Safety.IDEMPOTENT, Safety.WAIT, Safety.CREATE):\n"),
    ],
    # R3, R8: a job's launches are not counted: a relaunch reuses launch 1 (and its machine
    # name), and max_launches is never reached.
    "launch-not-counted": [
        ("scaler/jobs/claim_scripts.py", "local launch = redis.call('HINCRBY', KEYS[5], mid, 1)",
         "local launch = 1 + redis.call('HINCRBY', KEYS[5], mid, 0)"),
    ],
    # R4: a replica that lost its lease keeps acting: its fence never lapses, renewals never
    # fail, act sends calls without checking the lease, and scripts skip the fence check.
    "stale-leader-acts": [
        ("scaler/jobs/leader.py",
         "        if self._fence is not None and self._clock() >= self._deadline:\n"
         "            return None\n        return self._fence\n",
         "        return self._fence\n"),
        ("scaler/jobs/leader.py",
         "        if not ok:\n            self._fence = None\n            return False\n"
         "        self._deadline = started + self.ttl_s\n        return True\n",
         "        self._deadline = started + self.ttl_s\n        return True\n"),
        ("scaler/jobs/leader.py",
         "\"if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then \"",
         "\"if false then \""),
        ("scaler/loop/act.py",
         "if fence is None or current is None or current.value != fence.value:",
         "if False:"),
    ],
    # R5: no rate governor and no Retry-After: 429s are retried at once.
    "retry-storm": [
        ("scaler/fly/_transport.py",
         "        waited = await self._governor.acquire(route.action, route.scope)\n",
         "        waited = 0.0\n"),
        ("scaler/fly/_transport.py", "            delay = max(delay, exc.retry_after)\n",
         "            delay = 0.01\n"),
    ],
    # R6: an app whose listing failed is taken as an app with no machines (unknown as zero).
    "outage-is-empty": [
        ("scaler/loop/observe.py",
         "            if listing is None:\n                out[app] = None\n"
         "                listed[app] = None\n                continue\n",
         "            if listing is None:\n"
         "                listing = _Listing((), Listed(now, frozenset(), frozenset()))\n"),
    ],
    # R7: /readyz stays green whatever Redis does.
    "readyz-always-green": [
        ("scaler/loop/service.py",
         "        if self.elector.last_error is not None:\n"
         "            return False, f\"redis unreachable: {self.elector.last_error}\"\n", ""),
        ("scaler/loop/service.py",
         "        if \"redis\" in self.reconciler.observer.unknown:\n"
         "            return False, \"redis unreachable\"\n", ""),
    ],
    # R8: a job whose machines keep dying is given back forever, never dead-lettered.
    "never-dead-letter": [
        ("scaler/jobs/claim_scripts.py", "  if launches < tonumber(ARGV[4]) then",
         "  if true then"),
    ],
    # R9: max_runtime is never enforced.
    "no-max-runtime": [
        ("scaler/policy/reaper.py", "        return Verdict(\"max_runtime\", True)\n",
         "        return None\n"),
    ],
    # R10: orphans are destroyed at once, never marked first nor given their grace.
    "orphan-no-grace": [
        ("scaler/policy/reaper.py",
         "    if m.orphan_marked_at is None:\n        out.mark_orphan(pool, m, mark_reason)\n"
         "    elif now - m.orphan_marked_at >= grace:\n",
         "    if False:\n        out.mark_orphan(pool, m, mark_reason)\n    elif True:\n"),
    ],
    # R10: machines without our scaler id are listed and reaped like ours.
    "reap-foreign": [
        ("scaler/loop/observe.py",
         "                app, metadata={META_SCALER: self.settings.scaler.id}\n",
         "                app, metadata={}\n"),
        ("scaler/loop/machines.py",
         "    if meta.get(META_SCALER) != scaler_id or not machine.id:\n",
         "    if not machine.id:\n"),
    ],
}
"""Mutant name -> its source edits, each commented with the scenario that must FAIL with it."""

# R11-R19: one mutant per scenario that passes on a correct scaler.
MUTANTS.update({
    # R11: a refused create is tried again at once, every tick, with no backoff.
    "no-create-backoff": [
        ("scaler/policy/perjob.py",
         "        step = pool.claim_grace_s * 2.0 ** max(0, c.create_attempts - 1)\n",
         "        step = 0.0\n"),
    ],
    # R13: worker pools lose their damping: no scale tolerance, no minimum lifetime.
    "no-flap-damping": [
        ("scaler/policy/types.py",
         "    scale_tolerance: float = 0.1\n    min_lifetime_s: float = 600.0\n",
         "    scale_tolerance: float = 0.0\n    min_lifetime_s: float = 0.0\n"),
    ],
    # R14, R16: a machine still booting (created, starting) does not count against the caps.
    "booting-not-live": [
        ("scaler/policy/states.py",
         '    {"stopped", "suspended", "failed", "destroying", "destroyed", "launch_failed"}\n',
         '    {"stopped", "suspended", "failed", "destroying", "destroyed", "launch_failed",\n'
         '     "created", "starting"}\n'),
    ],
    # R12: the scaler thinks Fly allows four times its real rate and burst.
    "fly-limits-x4": [
        ("scaler/fly/limits.py",
         "    return Limit(rate=limit.rate, burst=max(1, limit.burst - 1))\n",
         "    return Limit(rate=limit.rate * 4, burst=limit.burst * 4)\n"),
    ],
    # R15: a replica that stops keeps its lease until the TTL ends it.
    "lease-kept": [
        ("scaler/loop/service.py",
         "        with contextlib.suppress(Exception):\n            await self.lease.release()\n",
         "        pass\n"),
        ("scaler/jobs/leader.py",
         "            with contextlib.suppress(redis.exceptions.RedisError, OSError):\n"
         "                await self.lease.release()\n",
         "            pass\n"),
    ],
    # R17: every tick leaves one asyncio task behind that never ends.
    "task-leak": [
        ("scaler/loop/reconciler.py", "        self.metrics.ticks.labels(trigger).inc()\n",
         "        self.metrics.ticks.labels(trigger).inc()\n"
         "        asyncio.get_running_loop().create_task(asyncio.sleep(86400))\n"),
    ],
    # R18: claims of a pool that is gone (renamed, removed, moved, turned worker) are dropped
    # from the index: their machines look like orphans and are destroyed mid-job.
    "forget-old-pool-claims": [
        ("scaler/policy/index.py",
         "        elif (owner := queue_owner.get(c.queue)) is not None:\n"
         "            by_pool.setdefault(owner, []).append(c)\n"
         "        else:\n            ownerless.append(c)\n", ""),
    ],
    # R19: Fly's timestamps are compared with the scaler's own clock, whatever Fly's Date says.
    "fly-clock-ignored": [
        ("scaler/loop/observe.py",
         "        self.clock_offset = offset if abs(offset) >= SKEW_MIN_S else 0.0\n",
         "        self.clock_offset = 0.0\n"),
    ],
})


# R20-R24: warm slots, pools over several apps, the suspended tier.
MUTANTS.update({
    # R20: a job bound to a slot whose start failed waits for that slot forever: never given
    # back, the slot never replaced.
    "slot-waits-forever": [
        ("scaler/policy/slots.py", '    if c.state == "claimed" and now < due:\n',
         '    if c.state == "claimed":\n'),
    ],
    # R21: a slot that died mid-job or never started gives its job back but is kept, to be
    # bound again: a broken slot is never reaped nor replaced.
    "broken-slot-kept": [
        ("scaler/policy/slots.py",
         "    out.destroy(pool.name, m, reason, False)  # or already destroyed in this plan",
         "    pass  # or already destroyed in this plan"),
    ],
    # R22: an idle slot of an older template is not replaced: new jobs may run on it.
    "old-template-slots-reused": [
        ("scaler/policy/slots.py",
         '    if m.slot != pool.slot_template:\n        return "slot_template"\n', ""),
    ],
    # R23 FAILs with R6's outage-is-empty: an app of the pool that cannot be listed (missing)
    # is taken as empty, and the pool launches in its other apps.
    # R24: stopped warm machines are started before suspended ones.
    "stopped-before-suspended": [
        ("scaler/policy/suspend.py",
         '    return (0 if m.state == "suspended" else 1, -m.updated_at, m.id)',
         '    return (1 if m.state == "suspended" else 0, -m.updated_at, m.id)'),
    ],
})


class MutantError(ValueError):
    """An unknown, stale or ambiguous mutant."""


def apply_mutant(name: str, tree: Path) -> None:
    """Apply mutant ``name`` to the copy at ``tree`` (its ``scaler/`` and ``workers/``)."""
    edits = MUTANTS.get(name)
    if edits is None:
        raise MutantError(f"unknown mutant {name!r}; known: {', '.join(sorted(MUTANTS))}")
    for path, old, new in edits:
        target = tree / path
        text = target.read_text()
        found = text.count(old)
        if found == 0:
            raise MutantError(
                f"mutant stale: {name}: {path} no longer contains {old[:60]!r}; update "
                "chaos/mutants.py to the code as it is now"
            )
        if found > 1:
            raise MutantError(
                f"mutant ambiguous: {name}: {path} contains {old[:60]!r} {found} times; make "
                "old_text longer in chaos/mutants.py"
            )
        target.write_text(text.replace(old, new))
