"""The lifecycle on a generated project: retrain, gate, deploy, rollback, audit, reproduce.

Each backend (a local registry directory, and S3 served by moto on 127.0.0.1 holding both the
DVC remote and the registry) gets one project that lives through the whole story; the tests
after the story use its registry for races, crashes and tampering.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest
from projects import (
    BUCKET,
    Project,
    change_bundle_byte_of,
    free_port,
    local_registry,
    run,
    s3_client,
)


def test_the_whole_story(lived):
    project, seen = lived
    assert "Version 1 passed the deploy gate" in seen["retrain v1"]
    assert seen["after deploy v1"] == 1
    assert "Version 2 passed the deploy gate" in seen["retrain v2"]
    assert seen["after deploy v2"] == 2
    assert "production rolled back from version 2 to 1" in seen["rollback"]
    assert seen["after rollback"] == 1
    assert "audit log verified: 5 records, 2 versions; production: version 1" in seen["audit"]
    for version in (1, 2):
        assert f"version {version} rebuilt from commit" in seen[f"reproduce v{version}"]
        assert "matches the registry" in seen[f"reproduce v{version}"]
    history = project.ops("audit").stdout
    assert "reproduced" in history and "Grace Hopper" in history
    # The data column names the source data only, not files the pipeline derives from it.
    first_row = audit_rows(history)[0]
    assert len(first_row[7].split(",")) == 1
    # The retrain committed its pipeline results, so every published version is rebuildable.
    assert run("git", "status", "--porcelain", cwd=project.path).stdout == ""
    report = (project.path / "reports" / "candidate.html").read_text()
    assert "Version 2 passed the deploy gate" in report and "<svg" in report
    assert "answered by a compiled copy of the trained model (onnxruntime " in report
    if "AWS_ENDPOINT_URL" in project.env:
        keys = stored_keys(project.env)
        assert any(key.startswith("dvc/") for key in keys), "the DVC remote is not on S3"
        assert f"registry/{project.package}/log/0000000005.json" in keys


def stored_keys(env: dict[str, str]) -> list[str]:
    pages = s3_client(env).get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_deploy_needs_an_approver_and_a_known_version(lived):
    project, _ = lived
    refused = project.ops("deploy", "--approved-by", " ", check=False)
    assert refused.returncode == 2
    assert "need an approver: --approved-by NAME" in refused.stderr
    missing = project.ops("deploy", "--version", "99", "--approved-by", "Ada", check=False)
    assert "version 99 is not in the registry" in missing.stderr


def audit_rows(audit_output: str) -> list[list[str]]:
    """The history table's rows as cells: #, version, action, stage, who, ..."""
    return [line.split() for line in audit_output.splitlines()[1:] if line[:1].isdigit()]


def count(audit_output: str, action: str) -> int:
    return sum(1 for cells in audit_rows(audit_output) if cells[2] == action)


def replay(audit_output: str) -> int | None:
    """An independent fold of the history table: a stack of production versions."""
    served: list[int] = []
    for cells in audit_rows(audit_output):
        if cells[3] != "production":
            continue
        if cells[2] == "promoted":
            served.append(int(cells[1]))
        elif cells[2] == "rolled_back":
            served.pop()
            assert served[-1] == int(cells[1]), "a rollback went to a version that did not serve"
    return served[-1] if served else None


def test_sixteen_concurrent_deploys_and_rollbacks(lived):
    project, _ = lived
    records_before = len(audit_rows(project.ops("audit").stdout))
    workers = []
    for worker in range(16):
        if worker % 2:
            verb = ["rollback", "--reason", "race test"]
        else:
            verb = ["deploy", "--version", str(1 + worker // 2 % 2)]
        command = project.cli(*verb, "--approved-by", f"worker-{worker:02d}")
        workers.append(
            subprocess.Popen(
                command,
                cwd=project.path,
                env=project.process_env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outcomes = {}
    for worker, process in enumerate(workers):
        out, err = process.communicate(timeout=300)
        assert process.returncode in (0, 2), f"worker {worker} crashed:\n{out}{err}"
        outcomes[f"worker-{worker:02d}"] = process.returncode == 0

    after = project.ops("audit").stdout
    actors = [cells[4] for cells in audit_rows(after) if cells[4].startswith("worker-")]
    assert sorted(actors) == sorted(name for name, ok in outcomes.items() if ok)
    assert len(audit_rows(after)) == records_before + sum(outcomes.values())
    assert any(outcomes.values())
    assert project.serving() == replay(after)


CRASH_SCRIPT = """
import os, signal, sys
from {package}.ops import settings, signing, storage
from {package}.ops.registry import open_registry

point = sys.argv[1]
config = settings.load()
registry = open_registry(config)
signer = signing.signer_for("published", config.project_dir, registry.log.trust)
state = registry.state()
first = state.versions[1]
bundle = registry.bundle(1, state)

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "bundle half-written":
    os.replace = die
elif point == "bundle stored, no record":
    storage.create = die
elif point == "record half-written":
    os.link = die
elif point == "bundle upload in flight":
    registry.fs.pipe_file = die
registry.publish(bundle, first["manifest"], first["gate"], "crash-test", signer)
print("published")
"""

CRASH_POINTS = {
    "local": ["bundle half-written", "bundle stored, no record", "record half-written"],
    "s3": ["bundle upload in flight", "bundle stored, no record"],
}


def test_a_killed_publish_leaves_no_version_and_a_valid_log(lived, request):
    project, _ = lived
    backend = request.node.callspec.params["lived"]
    script = CRASH_SCRIPT.format(package=project.package)
    python = project.path / ".venv" / "bin" / "python"
    versions = count(project.ops("audit").stdout, "published")
    for point in CRASH_POINTS[backend]:
        crashed = subprocess.run(
            [python, "-c", script, point],
            cwd=project.path,
            env=project.process_env,
            capture_output=True,
            text=True,
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        assert count(project.ops("audit").stdout, "published") == versions, point
    finished = subprocess.run(
        [python, "-c", script, "none"],
        cwd=project.path,
        env=project.process_env,
        capture_output=True,
        text=True,
    )
    assert finished.stdout.strip() == "published", finished.stderr
    assert count(project.ops("audit").stdout, "published") == versions + 1


def test_a_failed_gate_blocks_deploy(lived):
    project, _ = lived
    params = project.path / "params.yaml"
    original = params.read_text()
    # No model here gets every holdout row right, so this gate cannot be met.
    demanding = original.replace("metric: roc_auc", "metric: accuracy")
    params.write_text(demanding.replace("minimum: 0.97", "minimum: 0.999"))
    run("git", "commit", "--quiet", "-am", "Demand a perfect model", cwd=project.path)
    try:
        failed = project.nox("retrain", check=False)
        assert failed.returncode != 0
        assert "failed the deploy gate" in failed.stdout
        assert "is below the minimum 0.9990" in failed.stdout
        version = int(failed.stdout.split("Version ")[1].split(" failed")[0])
        report = (project.path / "reports" / "candidate.md").read_text()
        assert f"Version {version} failed the deploy gate" in report
        refused = project.ops(
            "deploy", "--version", str(version), "--approved-by", "Ada", check=False
        )
        assert refused.returncode == 2
        assert f"version {version} failed the deploy gate" in refused.stderr
    finally:
        params.write_text(original)
        run("git", "commit", "--quiet", "-am", "Back to the usual gate", cwd=project.path)


def tampered_audit(project: Project, tmp_path: Path, tamper) -> str:
    """Audit a copy of the local registry after `tamper(model_dir)`; the error it reports."""
    copy = tmp_path / "registry"
    shutil.copytree(local_registry(project), copy)
    tamper(copy / project.package)
    result = project.ops("audit", check=False, env={"LAB2PROD_REGISTRY": str(copy)})
    assert result.returncode == 2, result.stdout
    return result.stderr


def edit_record(model: Path) -> None:
    record = model / "log" / "0000000002.json"
    record.write_text(record.read_text().replace("Ada Lovelace", "Mallory"))


def swap_records(model: Path) -> None:
    a, b = model / "log" / "0000000002.json", model / "log" / "0000000003.json"
    a_text, b_text = a.read_text(), b.read_text()
    a.write_text(b_text)
    b.write_text(a_text)


def change_bundle_byte(model: Path) -> None:
    change_bundle_byte_of(sorted((model / "bundles").glob("*.zip"))[0])


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (edit_record, "record 0000000002.json was modified"),
        (
            lambda model: (model / "log" / "0000000002.json").unlink(),
            "record 0000000002.json is missing",
        ),
        (swap_records, "record 0000000002.json says it is number 3: records were reordered"),
        (change_bundle_byte, "does not match its sha256 in the registry"),
    ],
    ids=["edited", "deleted", "reordered", "bundle-byte"],
)
@pytest.mark.parametrize("lived", ["local"], indirect=True)
def test_tampering_is_named_by_audit(lived, tmp_path, tamper, message):
    project, _ = lived
    assert message in tampered_audit(project, tmp_path, tamper)


@pytest.mark.parametrize("lived", ["local"], indirect=True)
def test_deploy_checks_the_bundle_hash_first(lived, tmp_path):
    project, _ = lived
    copy = tmp_path / "registry"
    shutil.copytree(local_registry(project), copy)
    state_before = project.ops("audit", env={"LAB2PROD_REGISTRY": str(copy)}).stdout
    for bundle in (copy / project.package / "bundles").glob("*.zip"):
        change_bundle_byte_of(bundle)
    idle = 1 if project.serving() == 2 else 2
    refused = project.ops(
        "deploy",
        "--version",
        str(idle),
        "--approved-by",
        "Ada",
        check=False,
        env={"LAB2PROD_REGISTRY": str(copy)},
    )
    assert refused.returncode == 2
    assert f"the bundle of version {idle} does not match its sha256" in refused.stderr
    records = sorted((copy / project.package / "log").glob("*.json"))
    assert len(records) == len(audit_rows(state_before)), "a refused deploy wrote a record"


@pytest.mark.parametrize("lived", ["local"], indirect=True)
def test_package_refuses_stale_or_uncommitted_work(lived):
    project, _ = lived
    params = project.path / "params.yaml"
    readme = project.path / "README.md"
    try:
        params.write_text(params.read_text().replace("C: 1.0", "C: 0.5"))
        stale = project.nox("package", check=False)
        assert stale.returncode != 0
        assert "package: refused: the pipeline is out of date (train" in stale.stdout
        assert "run `nox -s repro`" in stale.stdout
        run("git", "checkout", "params.yaml", cwd=project.path)

        readme.write_text(readme.read_text() + "\nA note.\n")
        dirty = project.nox("package", check=False)
        assert "package: refused: the git tree has uncommitted changes" in dirty.stdout
        assert "--allow-dirty" in dirty.stdout
        built = Path(project.nox("package", "--allow-dirty").stdout.strip().splitlines()[-1])
        with zipfile.ZipFile(built) as bundle:
            manifest = json.loads(bundle.read("manifest.json"))
        assert manifest["dirty"] is True
        assert {"model/model.joblib", "uv.lock", "dvc.lock", "schema.json"} <= set(
            manifest["members"]
        )

        published = project.nox("retrain", "--allow-dirty")
        version = int(published.stdout.split("Version ")[1].split(" passed")[0])
        refused = project.ops(
            "deploy", "--version", str(version), "--approved-by", "Ada", check=False
        )
        assert f"version {version} was built from uncommitted changes" in refused.stderr
    finally:
        run("git", "checkout", "params.yaml", "README.md", cwd=project.path)


def test_an_unreachable_registry_is_named_in_one_line(lived, tmp_path):
    project, _ = lived
    if "AWS_ENDPOINT_URL" in project.env:
        nowhere = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    else:
        (tmp_path / "a-file").write_text("")
        nowhere = {"LAB2PROD_REGISTRY": str(tmp_path / "a-file" / "registry")}
    result = project.ops("audit", check=False, env=nowhere)
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("audit: cannot reach"), result.stderr
