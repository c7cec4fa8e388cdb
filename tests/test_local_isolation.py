"""Each process machine's root directory: fresh from the image on every start from ``stopped``,
kept across a suspend and resume (the isolation warm per-job slots rely on)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from scaler.local import LocalAPIServer
from scaler.local.testing import eventually, make_app, make_machine, py, wait_state

# One "job": report what the root holds, then leave a file and a secret in it (no env involved).
_JOB = """
import json, os, pathlib, sys
root = pathlib.Path.cwd()
home = pathlib.Path(os.environ["HOME"])
seen = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
reports = pathlib.Path(os.environ["REPORT_DIR"])
facts = {"seen": seen, "root": str(root), "home": str(home),
         "env_root": os.environ["FLY_LOCAL_ROOT"]}
(reports / f"{len(list(reports.iterdir()))}.json").write_text(json.dumps(facts))
(root / "job-output.txt").write_text("job A was here")
(home / ".job-secret").write_text("s3cr3t-token-of-job-a")
"""


def _reports(report_dir: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(report_dir.iterdir())]


def test_start_from_stopped_resets_the_root_to_the_image(
    local_api_factory: Callable[..., LocalAPIServer], tmp_path: Path
) -> None:
    image = tmp_path / "image"
    (image / "etc").mkdir(parents=True)
    (image / "etc" / "app.conf").write_text("from the image")
    reports = tmp_path / "reports"
    reports.mkdir()
    api = local_api_factory(image_files={"local/slot": image})
    with api.client(timeout=30) as c:
        app = make_app(c)
        m = make_machine(c, app, py(_JOB), config={
            "image": "local/slot:v1", "restart": {"policy": "no"},
            "env": {"REPORT_DIR": str(reports)}})
        wait_state(c, app, m["id"], "stopped")
        eventually(lambda: len(list(reports.iterdir())) == 1, what="job A's report")
        root = api.workdir / "machines" / m["id"] / "root"
        assert (root / "job-output.txt").exists()  # job A's leftovers, until the next start

        assert c.post(f"/v1/apps/{app}/machines/{m['id']}/start").status_code == 200
        eventually(lambda: len(list(reports.iterdir())) == 2, what="job B's report")
        first, second = _reports(reports)
        assert first["seen"] == ["etc", "etc/app.conf"]
        assert second["seen"] == ["etc", "etc/app.conf"]  # neither the file nor the secret
        assert second["root"] == second["home"] == second["env_root"] == str(root)
        # the image directory itself is never written to
        assert sorted(p.name for p in image.rglob("*")) == ["app.conf", "etc"]


def test_resume_from_suspended_keeps_the_root(
    local_api_factory: Callable[..., LocalAPIServer], tmp_path: Path
) -> None:
    api = local_api_factory()
    code = ("import pathlib, time\n"
            "if pathlib.Path('kept.txt').exists(): pathlib.Path('stale.txt').write_text('x')\n"
            "pathlib.Path('kept.txt').write_text('x'); time.sleep(60)")
    with api.client(timeout=30) as c:
        app = make_app(c)
        m = make_machine(c, app, py(code), config={"restart": {"policy": "no"}})
        wait_state(c, app, m["id"], "started")
        root = api.workdir / "machines" / m["id"] / "root"
        eventually(lambda: (root / "kept.txt").exists(), what="the file")
        assert c.post(f"/v1/apps/{app}/machines/{m['id']}/suspend").status_code == 200
        wait_state(c, app, m["id"], "suspended")
        assert c.post(f"/v1/apps/{app}/machines/{m['id']}/start").status_code == 200
        wait_state(c, app, m["id"], "started")
        assert (root / "kept.txt").read_text() == "x"
        assert not (root / "stale.txt").exists()  # resumed, not started again
        # a stop then a start boots a fresh root: the file is gone once the new process runs
        assert c.post(f"/v1/apps/{app}/machines/{m['id']}/stop").status_code == 200
        wait_state(c, app, m["id"], "stopped")
        assert c.post(f"/v1/apps/{app}/machines/{m['id']}/start").status_code == 200
        wait_state(c, app, m["id"], "started")
        eventually(lambda: (root / "kept.txt").exists(), what="the new process's file")
        assert not (root / "stale.txt").exists()


def test_the_log_survives_a_restart_of_the_root(
    local_api_factory: Callable[..., LocalAPIServer],
) -> None:
    api = local_api_factory()
    with api.client(timeout=30) as c:
        app = make_app(c)
        m = make_machine(c, app, py("print('boot')"), config={"restart": {"policy": "no"}})
        wait_state(c, app, m["id"], "stopped")
        assert c.post(f"/v1/apps/{app}/machines/{m['id']}/start").status_code == 200
        log = api.workdir / "machines" / m["id"] / "machine.log"
        eventually(lambda: log.read_text().count("boot") == 2, what="two boots in the log")
