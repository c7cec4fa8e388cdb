"""Configuration of pools over several Fly apps (``apps``): what is accepted, what is refused and
how the refusal reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scaler.config import ConfigError, load_settings, parse_settings
from scaler.loop.machines import pool_policy


def pool(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "burst", "queues": ["burst"], "image": "i"}
    base.update(kw)
    return base


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_settings(data, {})
    return info.value.problems


def test_apps_is_accepted_and_the_first_is_the_pools_app() -> None:
    s = parse_settings(
        {"pools": [pool(apps=["jobs-1", "jobs-2"])], "apps": {"jobs-2": {"max_machines": 4}}}, {}
    )
    p = s.pools[0]
    assert p.fly_apps == ("jobs-1", "jobs-2") and p.app == "jobs-1"
    policy = pool_policy(p, s)
    assert policy.fly_apps == ("jobs-1", "jobs-2")
    assert "app=jobs-1,jobs-2" in s.describe()
    # A single app keeps its old form.
    one = parse_settings({"pools": [pool(app="jobs")]}, {}).pools[0]
    assert one.fly_apps == ("jobs",) and one.apps == ()


def test_app_and_apps_together_is_refused_naming_both() -> None:
    (found,) = problems({"pools": [pool(app="jobs", apps=["jobs-1", "jobs-2"])]})
    assert found.startswith("pools[0].apps: 'app' and 'apps' are both set; keep one")


def test_neither_app_nor_apps_is_refused() -> None:
    (found,) = problems({"pools": [pool()]})
    assert found.startswith("pools[0].app: required key is missing")
    assert "apps = [" in found


@pytest.mark.parametrize(
    ("apps", "expected"),
    [
        (["jobs-1", "jobs-1"], "pools[0].apps: app 'jobs-1' is listed twice"),
        ([], "pools[0].apps: an empty list"),
        (["Jobs_1"], "pools[0].apps[0]: "),
    ],
)
def test_bad_apps_lists(apps: list[str], expected: str) -> None:
    found = problems({"pools": [pool(apps=apps)]})
    assert any(p.startswith(expected) for p in found), found


def test_apps_on_a_worker_pool_is_refused() -> None:
    (found,) = problems({"pools": [pool(mode="worker", apps=["jobs-1", "jobs-2"])]})
    assert found.startswith("pools[0].apps: 'apps' applies to per-job pools only")


def test_pool_cap_against_its_apps_caps() -> None:
    apps = {"jobs-1": {"max_machines": 3}, "jobs-2": {"max_machines": 4}}
    (found,) = problems({"pools": [pool(apps=["jobs-1", "jobs-2"], max_machines=8)], "apps": apps})
    assert found == (
        "pools[0].max_machines: 8 is above the sum of its apps' max_machines (7), so it can "
        "never be reached; lower one"
    )
    # Reachable through both apps together: accepted.
    parse_settings({"pools": [pool(apps=["jobs-1", "jobs-2"], max_machines=7)], "apps": apps}, {})
    # One app without a cap: nothing to exceed.
    parse_settings(
        {"pools": [pool(apps=["jobs-1", "jobs-3"], max_machines=50)],
         "apps": {"jobs-1": {"max_machines": 3}}}, {}
    )


def test_an_apps_section_of_any_listed_app_is_used() -> None:
    s = parse_settings(
        {"pools": [pool(apps=["jobs-1", "jobs-2"])], "apps": {"jobs-2": {"max_machines": 4}}}, {}
    )
    assert s.app_cap("jobs-2") == 4
    found = problems({"pools": [pool(apps=["jobs-1", "jobs-2"])],
                      "apps": {"jobs-3": {"max_machines": 4}}})
    assert any(p.startswith("apps.jobs-3: no pool uses app 'jobs-3'") for p in found), found


def test_an_app_shared_by_two_pools_still_works() -> None:
    s = parse_settings(
        {"pools": [pool(apps=["jobs-1", "jobs-2"]),
                   pool(name="solo", app="jobs-1", queues=["solo"])]}, {}
    )
    assert [p.fly_apps for p in s.pools] == [("jobs-1", "jobs-2"), ("jobs-1",)]


def test_toml_file(tmp_path: Path) -> None:
    f = tmp_path / "scaler.toml"
    f.write_text(
        '[[pools]]\nname = "burst"\napps = ["jobs-1", "jobs-2", "jobs-3", "jobs-4"]\n'
        'queues = ["burst"]\nimage = "registry.fly.io/jobs:1"\n'
    )
    s = load_settings(f, env={"FLY_API_TOKEN": "t"})
    assert s.pools[0].fly_apps == ("jobs-1", "jobs-2", "jobs-3", "jobs-4")


def test_apps_with_warm_slots_is_refused() -> None:
    (found,) = problems({"pools": [pool(apps=["jobs-1", "jobs-2"], warm_slots=2)]})
    assert found.startswith("pools[0].apps: warm slots live in one app")
