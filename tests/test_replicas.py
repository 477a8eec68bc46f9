"""Replicas of the service behind a load balancer, and the Kubernetes manifests that run them.

Two `serve` processes follow the same registry stage behind a real nginx on 127.0.0.1, as any
load balancer would put them: under load, a deploy and a rollback reach both within the stated
time and fail no request, and both replicas' inference logs keep every row. The manifests of
every registry kind validate offline against Kubernetes' schemas and run what the image runs.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from projects import S3_ANSWERS, TOOLS, Project, free_port, local_registry, render, run
from test_serving import Client, holdout_records, in_project, serving

# Debian installs it in /usr/sbin, which a user's PATH may lack.
NGINX = shutil.which("nginx", path=f"{os.environ['PATH']}{os.pathsep}/usr/sbin")
# What the README states: a replica serves a new version at most one poll interval (the default
# `--poll-seconds`) after its record, plus the time it takes to load, verify and warm it (under
# a second for the example model; the rest is room for a loaded 2-core machine).
POLL_SECONDS = 2.0
LOAD_SECONDS = 3.0
CLIENTS = 6

NGINX_CONF = """
worker_processes 1;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream replicas {{
        server 127.0.0.1:{first};
        server 127.0.0.1:{second};
        keepalive 16;
        # Shorter than the service's keep-alive (uvicorn's 5 s): nginx never reuses a
        # connection the replica is closing.
        keepalive_timeout 4s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # A replica that stops closes its idle connections; a request nginx was sending on
            # one goes to the other replica. Safe for /predict, which changes nothing.
            proxy_next_upstream error timeout non_idempotent;
        }}
    }}
}}
"""


@contextmanager
def nginx(tmp_path: Path, upstreams: list[int]) -> Iterator[Client]:
    """nginx in the foreground on a free port, balancing between the given ports."""
    port = free_port()
    (tmp_path / "tmp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path / "tmp", first=upstreams[0],
                                      second=upstreams[1], port=port))  # fmt: skip
    # As root, nginx's workers would run as nobody, who may not enter the test's folders.
    user = "user root;" if os.geteuid() == 0 else ""
    server = subprocess.Popen(
        [NGINX, "-p", tmp_path, "-c", conf, "-e", "stderr",
         "-g", f"daemon off; pid {tmp_path / 'nginx.pid'}; {user}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    client = Client(port)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert server.poll() is None, f"nginx stopped:\n{server.stdout.read()}"
            try:
                if client.call("/health")[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "nginx never answered"
                time.sleep(0.05)
        yield client
    finally:
        server.terminate()
        server.wait(timeout=10)


def port_of(client: Client) -> int:
    return int(client.base.rsplit(":", 1)[1])


class Load:
    """Clients that keep sending /predict through the balancer, each on a kept-alive connection,
    counting every answer; every request's id starts with `tag`, to find its rows in the log."""

    def __init__(self, port: int, record: dict, tag: str) -> None:
        self.port, self.body, self.tag = port, json.dumps(record).encode(), tag
        self.versions: Counter[int] = Counter()
        self.failures: list[object] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.ask, args=(n,)) for n in range(CLIENTS)]

    def ask(self, client: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = 0
        while not self.stop.is_set():
            headers = {"content-type": "application/json",
                       "x-request-id": f"{self.tag}-{client}-{sent}"}  # fmt: skip
            sent += 1
            try:
                connection.request("POST", "/predict", self.body, headers)
                response = connection.getresponse()
                reply = response.read()
            except OSError as error:  # a reset or refused connection is a failed request too
                self.failures.append(repr(error))
                connection.close()
                continue
            if response.status == 200:
                self.versions[json.loads(reply)["model_version"]] += 1
            else:
                self.failures.append((response.status, reply[:200]))
        connection.close()

    @property
    def answered(self) -> int:
        return sum(self.versions.values())

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


class Watch:
    """Asks one replica directly, every 20 ms, which version it serves; notes each change."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.changes: list[tuple[float, int]] = []  # (when, the version now served)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.look)

    def look(self) -> None:
        while not self.stop.is_set():
            version = self.client.call("/version")[1]["model_version"]
            if not self.changes or self.changes[-1][1] != version:
                self.changes.append((time.time(), version))
            time.sleep(0.02)

    def took(self, version: int, since: float) -> float | None:
        """When the replica first served `version` after `since`."""
        return next((at for at, seen in self.changes if seen == version and at > since), None)

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def recorded_at(project: Project) -> float:
    """When the newest record of the audit log was made (its signed `at`)."""
    log = local_registry(project) / project.package / "log"
    newest = json.loads(max(log.glob("*.json")).read_text())
    return datetime.fromisoformat(newest["body"]["at"]).timestamp()


def swap(project: Project, verb: list[str], version: int, watches: list[Watch]) -> list[float]:
    """Deploy or roll back, then wait for every replica to serve `version`; the seconds each took
    from the record."""
    project.ops(*verb, "--approved-by", "replica-test")
    at = recorded_at(project)
    deadline = time.monotonic() + 60
    while None in (taken := [watch.took(version, at) for watch in watches]):
        assert time.monotonic() < deadline, f"a replica never took version {version}"
        time.sleep(0.05)
    return [when - at for when in taken]


# Rows of the inference log whose request id starts with the given tag.
LOGGED_ROWS = """
import sys
from pathlib import Path
import pyarrow.parquet as pq
folder = Path(sys.argv[1])
ids = [i for p in folder.rglob("*.parquet") for i in pq.read_table(p, columns=["request_id"])
       .column("request_id").to_pylist() if i.startswith(sys.argv[2])]
print(len(ids), len(set(ids)))
"""


@pytest.mark.skipif(NGINX is None, reason="needs nginx (apt-get install nginx)")
@pytest.mark.parametrize("lived", ["local"], indirect=True)
def test_replicas_behind_nginx_swap_together_without_failing_a_request(lived, tmp_path):
    project, _ = lived
    record = holdout_records(project)[0]
    start = project.serving()
    other = 1 if start != 1 else 2
    tag = f"replicas-{time.time_ns()}"
    poll = ("--poll-seconds", str(POLL_SECONDS))
    with ExitStack() as stack:
        replicas = [stack.enter_context(serving(project, *poll)) for _ in range(2)]
        balancer = stack.enter_context(nginx(tmp_path, [port_of(r) for r in replicas]))
        watches = [stack.enter_context(Watch(replica)) for replica in replicas]
        with Load(port_of(balancer), record, tag) as load:
            deployed = swap(project, ["deploy", "--version", str(other)], other, watches)
            time.sleep(0.5)  # the load on the new version for a while
            rolled_back = swap(project, ["rollback", "--reason", "replica test"], start, watches)
            time.sleep(0.5)
            # A rolling update: one replica is stopped (SIGTERM) under load; nginx sends its
            # share to the other, and what it had in flight is answered first.
            watches[0].__exit__()
            replicas[0].process.terminate()
            assert replicas[0].process.wait(timeout=20) == 0
            before = load.answered
            time.sleep(1)
            assert load.answered > before
    print(f"seconds from the record to each replica serving: deploy {deployed}, "
          f"rollback {rolled_back}; {load.answered} requests")  # fmt: skip
    assert load.failures == [], load.failures[:5]
    assert load.versions[start] > 0 and load.versions[other] > 0
    for lag in deployed + rolled_back:
        assert lag < POLL_SECONDS + LOAD_SECONDS
    # Both replicas wrote their rows to the same folders on stopping; none replaced another's.
    folder = local_registry(project) / project.package / "inference"
    rows, distinct = map(int, in_project(project, LOGGED_ROWS, str(folder), tag).split())
    assert rows == distinct == load.answered


# The answers whose manifests differ: a local registry (a shared volume) and S3 (credentials).
MANIFEST_ANSWERS = {"local": {}, "s3": S3_ANSWERS}


@pytest.mark.parametrize("answers", list(MANIFEST_ANSWERS))
def test_kubernetes_manifests_validate_and_run_what_the_image_runs(answers, tmp_path):
    project = render(tmp_path / "project", MANIFEST_ANSWERS[answers], tasks=False)
    folder = project / "deploy" / "kubernetes"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    manifests = sorted(folder.glob("*.yaml"))
    assert {folder / name for name in kustomization["resources"]} == set(manifests) - {
        folder / "kustomization.yaml"
    }
    run(TOOLS / "kubernetes-validate", "--strict", "--quiet",
        *[folder / name for name in kustomization["resources"]], cwd=project)  # fmt: skip
    documents = {path.stem: yaml.safe_load(path.read_text()) for path in manifests}
    assert documents["autoscaler"]["apiVersion"] == "autoscaling/v2"
    pod = documents["deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]

    # What the Dockerfile runs: `cli serve` on port 8000, as user 10001, probed on /health.
    dockerfile = (project / "Dockerfile").read_text()
    assert re.search(r'ENTRYPOINT \[.*"serve"\]', dockerfile)
    assert "EXPOSE 8000" in dockerfile and "LAB2PROD_PORT=8000" in dockerfile
    assert container["ports"] == [{"name": "http", "containerPort": 8000}]
    assert container["args"][0].startswith("--")  # options of serve, not another command
    assert pod["securityContext"]["runAsUser"] == 10001 and "USER 10001" in dockerfile
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"

    # Secrets come from Secrets; the registry's place is no secret.
    env = {item["name"]: item for item in container["env"]}
    secret = {"LAB2PROD_TOKEN"} | ({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
                                  if answers == "s3" else set())  # fmt: skip
    assert secret <= set(env)
    for name, item in env.items():
        assert ("value" in item) == (name == "LAB2PROD_REGISTRY"), name
    registry = env["LAB2PROD_REGISTRY"]["value"]
    if answers == "s3":
        assert registry == S3_ANSWERS["registry"] and "volumes" not in pod
    else:
        # The volume sits where the project's relative path leads from the image's /app, the
        # path its anchored heads name the registry by.
        answered = yaml.safe_load((project / ".copier-answers.yml").read_text())["registry"]
        assert os.path.relpath(registry, "/app") == os.path.normpath(answered)
        assert container["volumeMounts"][0]["mountPath"] == registry
        claim = pod["volumes"][0]["persistentVolumeClaim"]["claimName"]
        assert documents["registry-volume"]["metadata"]["name"] == claim
