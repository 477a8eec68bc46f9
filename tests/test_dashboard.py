"""The dashboard, the model card and the notifications of a generated project.

They run on a copy of the registry of the project that lived the lifecycle story (two versions,
deploys by two people, a rollback), extended by a year of daily `monitored` records signed with
the project's own key through its own ops modules: what `nox -s monitor` would have written.
The page is opened in headless Chromium; e-mail goes to a real SMTP server and the webhook to a
real HTTP server, both on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from projects import Project, free_port, local_registry, run
from test_serving import serving

pytestmark = pytest.mark.parametrize("lived", ["local"], indirect=True)

ARTIFACTS = Path(__file__).parent / "artifacts"
SCREENSHOT = ARTIFACTS / "dashboard.png"
MAX_BYTES = 2_000_000
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Run by the project's Python: a `monitored` record a day for DAYS days (interface 3), each
# stamped with its day, signed with the publish key; the last one reports a drift breach.
A_YEAR_OF_MONITORING = """
import sys
from datetime import UTC, datetime, timedelta
from {package}.ops import audit, science, settings, signing
from {package}.ops.registry import open_registry
from {package}.tasks import METRICS

days = {days}
config = settings.load()
registry = open_registry(config)
signer = signing.private_key("publish", config.project_dir)
version = str(registry.state().serving("production"))
contract = science.contract()
features = [column.name for column in contract.features]
first = datetime(2025, 1, 1, 7, tzinfo=UTC)


class Clock(datetime):
    moment = first

    @classmethod
    def now(cls, tz=None):
        return cls.moment


audit.datetime = Clock  # each record carries the day it stands for
for day in range(days):
    end = first + timedelta(days=day)
    Clock.moment = end + timedelta(minutes=2)
    last = day == days - 1
    daily = [
        {{"day": (end - timedelta(days=back)).date().isoformat(),
          "rows": 800 + (day * 37 + back) % 300, "errors": (day + back) % 5}}
        for back in range(7, 0, -1)
    ]
    figures = {{
        "requests": 5000, "rows": 6000, "errors": 20, "error_rate": 0.002 + day % 7 / 1000,
        "latency_ms": {{"p50": 2.5, "p99": 8.0 + day % 4}},
        # The last feature has no figure in the last check, as one left out of the log.
        "drift": {{name: 0.4 if last and i == 0 else None if last and name == features[-1]
                   else 0.02 * (i % 5) for i, name in enumerate(features)}},
        "prediction_drift": 0.03,
        "live_metrics": {{name: 0.8 + day % 30 / 200 for name in METRICS[contract.target.task]}},
        "labelled_rows": 200,
        "daily": daily,
    }}
    breaches = [{{"kind": "input_drift", "version": int(version), "subject": features[0],
                  "value": 0.4, "threshold": 0.25, "advice": "retrain on recent data"}}]
    registry.record("monitored", "monitor", {{
        "stage": "production",
        "window": {{"start": (end - timedelta(days=7)).isoformat(), "end": end.isoformat()}},
        "versions": {{version: figures}},
        "jobs": {{"score": {{"last_seconds": 41.0, "median_seconds": 40.0}}}},
        "breaches": breaches if last else [],
        "duration_seconds": 30.0 + day % 11,
        "thresholds": {{"drift_psi": 0.25, "min_rows": 500}},
    }}, signer)
"""


def registry_copy(project: Project, path: Path) -> dict[str, str]:
    """A copy of the lived project's registry, and the environment that points the CLI at it."""
    shutil.copytree(local_registry(project), path)
    return {"LAB2PROD_REGISTRY": str(path)}


@pytest.fixture(scope="module")
def monitored(lived, tmp_path_factory) -> tuple[Project, dict[str, str]]:
    project, _ = lived
    env = registry_copy(project, tmp_path_factory.mktemp("monitored") / "registry")
    script = A_YEAR_OF_MONITORING.format(package=project.package, days=365)
    run(str(project.path / ".venv" / "bin" / "python"), "-c", script, cwd=project.path,
        env=project.env | env)  # fmt: skip
    return project, env


@pytest.fixture(scope="module")
def page(monitored, tmp_path_factory) -> Path:
    project, env = monitored
    output = tmp_path_factory.mktemp("dashboard") / "dashboard.html"
    said = project.ops("dashboard", "--output", str(output), env=env).stdout
    assert str(output) in said
    return output


def chromium(*arguments: str) -> subprocess.CompletedProcess:
    program = shutil.which("chromium")
    if program is None:
        pytest.skip("needs Debian's chromium (.ci/run installs it)")
    return subprocess.run(
        [program, *CHROMIUM_FLAGS, *arguments], capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip


def test_the_dashboard_renders_in_a_browser_with_every_chart(page):
    opened = chromium("--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    console = [line for line in opened.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    dom = opened.stdout
    charts = re.findall(r'<svg class="chart".*?</svg>', dom, flags=re.DOTALL)
    labels = [re.search(r'aria-label="([^"]*)"', chart).group(1) for chart in charts]
    assert all('class="mark"' in chart for chart in charts), labels
    for label in ("version serving", "records per day", "share refused", "milliseconds (p99)",
                  "seconds", "population stability index (0 = same as in training)"):  # fmt: skip
        assert label in labels, labels
    # Which version served, one chart per task metric, five of live behaviour, and each
    # version's card (feature importance).
    assert "roc_auc" in labels
    assert len(charts) == 1 + 5 + 5 + 2, labels
    # The production version and who put it there.
    serving = re.search(r'class="serving">(\d+)</b>.*?class="approver">([^<]+)</b>', dom)
    assert serving.groups() == ("1", "Ada Lovelace"), serving
    assert "complaints about April" in dom  # the rollback, in the history
    assert "retrain on recent data" in dom  # the last check's breach, with its advice
    ARTIFACTS.mkdir(exist_ok=True)
    chromium("--window-size=1100,6000", f"--screenshot={SCREENSHOT}", page.as_uri())
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_year_of_daily_monitoring_stays_under_two_megabytes(page):
    text = page.read_text()
    assert len(page.read_bytes()) < MAX_BYTES
    assert text.count("<script") == 0 and "http://" not in text.replace(
        "http://www.w3.org/2000/svg", ""
    )  # self-contained: nothing to run, nothing to fetch


def test_every_bundle_carries_its_model_card(monitored):
    project, env = monitored
    bundles = sorted((Path(env["LAB2PROD_REGISTRY"]) / project.package / "bundles").glob("*.zip"))
    assert len(bundles) >= 2
    for bundle in bundles:
        with zipfile.ZipFile(bundle) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            card = json.loads(archive.read("card.json"))
            assert "<h1>Model card" in archive.read("card.html").decode()
        assert card["lineage"]["git_commit"] == manifest["git_commit"]
        assert card["lineage"]["lock_sha256"] == manifest["lock_sha256"]
        assert card["data"]["hashes"] == manifest["data_hashes"]
        assert card["data"]["rows_held_out"] == manifest["metrics"]["holdout_rows"]
        held = manifest["data_quality"]
        assert card["data"]["rows_trained"] == (
            held["rows_read"] - held["rows_rejected"] - manifest["metrics"]["holdout_rows"]
        )
        assert {name: entry["value"] for name, entry in card["metrics"].items()} == {
            name: manifest["metrics"][name] for name in card["metrics"]
        }
        importance = card["importance"]
        assert importance["metric"] == manifest["params"]["gate"]["metric"]
        ranked = [entry["mean"] for entry in importance["features"]]
        assert ranked == sorted(ranked, reverse=True) and max(ranked) > 0
        assert card["purpose"]["task"] == "binary" and card["purpose"]["description"]


def test_the_service_draws_the_dashboard_behind_its_token(monitored):
    project, env = monitored
    token = "dashboard-token"
    with serving(project, env=env | {"LAB2PROD_TOKEN": token}) as client:
        client.token = None
        status, _ = client.call("/dashboard")
        assert status == 401
        client.token = token
        status, first = client.call("/dashboard")
        assert status == 200 and 'class="serving">1</b>' in first
        records = len(list((Path(env["LAB2PROD_REGISTRY"]) / project.package / "log").glob("*")))
        assert f"head: record {records}" in first
        # A new record in the log draws the page anew.
        project.ops("deploy", "--version", "2", "--approved-by", "Grace Hopper", env=env)
        status, second = client.call("/dashboard")
        assert status == 200 and 'class="serving">2</b>' in second
        assert f"head: record {records + 1}" in second


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def receiver() -> Iterator[tuple[list[dict], int]]:
    """A webhook receiver that keeps the bodies whose HMAC verifies, and answers 401 otherwise."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            expected = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
            good = hmac.compare_digest(self.headers.get("X-Lab2prod-Signature", ""), expected)
            if good:
                received.append(json.loads(body))
            self.send_response(204 if good else 401)
            self.end_headers()

        def log_message(self, *arguments) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_deploy_and_rollback_notify_by_mail_and_signed_webhook(lived, tmp_path, mailbox, receiver):
    project, _ = lived
    box, smtp_port = mailbox
    received, hook_port = receiver
    env = registry_copy(project, tmp_path / "registry") | {
        "LAB2PROD_SMTP_HOST": "127.0.0.1",
        "LAB2PROD_SMTP_PORT": str(smtp_port),
        "LAB2PROD_SMTP_FROM": "models@example.com",
        "LAB2PROD_SMTP_TO": "owner@example.com, oncall@example.com",
        "LAB2PROD_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hook",
        "LAB2PROD_WEBHOOK_SECRET": "hook-secret",
        "LAB2PROD_DASHBOARD_URL": "https://models.example.com/dashboard",
    }
    project.ops("deploy", "--version", "2", "--approved-by", "Grace Hopper", env=env)
    assert [event["event"] for event in received] == ["deploy"]
    assert received[0]["figures"]["approved_by"] == "Grace Hopper"
    assert received[0]["dashboard_url"] == "https://models.example.com/dashboard"
    sender, recipients, content = box.messages[0]
    assert sender == "models@example.com"
    assert recipients == ["owner@example.com", "oncall@example.com"]
    assert b"deployed to production" in content and b"models.example.com/dashboard" in content

    # A receiver that refuses the signature, and no mail server: the rollback still happens.
    broken = env | {"LAB2PROD_WEBHOOK_SECRET": "wrong", "LAB2PROD_SMTP_PORT": str(free_port())}
    done = project.ops(
        "rollback", "--approved-by", "Ada Lovelace", "--reason", "test alerts", env=broken
    )
    assert "rolled back from version 2 to 1" in done.stdout
    assert "WARNING: the webhook notification failed: HTTP Error 401" in done.stderr
    assert "WARNING: the e-mail notification failed" in done.stderr
    assert len(received) == 1 and len(box.messages) == 1
