"""The registry's history cannot be cut or forged, and nothing runs from a file nobody verified.

Each test plays an attacker (or a clumsy operator) against the local-registry project after its
lifecycle story: records deleted, forged with a key the project does not trust, rewritten by an
insider; a pickle that runs code when loaded, handed over as a bundle file or published in the
registry; a git-ignored file beside the code; a `package` or `retrain` killed half-way.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from projects import Project, free_port, local_registry, run
from test_serving import holdout_records, serving

pytestmark = pytest.mark.parametrize("lived", ["local"], indirect=True)

# Run in the project's environment: appends records the way an attacker with write access to the
# registry would, through the project's own encoder, signed by a key given on the command line
# ("mallory" makes a key nobody trusts; "publish" or "deploy" use the project's own key).
FORGE = """
import json, sys
from {package}.ops import audit, settings, signing, storage
from {package}.ops.registry import open_registry

config = settings.load()
log = open_registry(config).log
records = log.records()
keep, key, forged = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
for record in records[keep:]:
    log.fs.rm_file(log.path(record.sequence))
signer = (
    signing.Signer.generate() if key == "mallory" else signing.private_key(key, config.project_dir)
)
previous = records[keep - 1].sha256 if keep else log.genesis
for sequence, (action, details) in enumerate(forged, start=keep + 1):
    data = audit.encode(sequence, action, "mallory", details, previous, signer)
    assert storage.create(log.fs, log.path(sequence), data)
    previous = audit.sha256(audit.canonical(json.loads(data)["body"]))
print(signer.id)
"""


def forge(project: Project, keep: int, key: str, records: list) -> str:
    """Keep the first `keep` records, append `records` signed by `key`; the signing key's id."""
    python = project.path / ".venv" / "bin" / "python"
    script = FORGE.format(package=project.package)
    return run(python, "-c", script, str(keep), key, json.dumps(records), cwd=project.path,
               env=project.env).stdout.strip()  # fmt: skip


@contextmanager
def restored(project: Project) -> Iterator[Path]:
    """The project's real registry, put back as it was afterwards, with the project's commits
    and the heads this machine remembers."""
    registry = local_registry(project)
    backup = registry.with_name(f"{registry.name}.backup")
    shutil.copytree(registry, backup)
    seen = project.path / ".lab2prod" / "seen-heads.json"
    seen_before = seen.read_bytes() if seen.exists() else None
    commit = run("git", "rev-parse", "HEAD", cwd=project.path).stdout.strip()
    try:
        yield registry
    finally:
        shutil.rmtree(registry)
        backup.rename(registry)
        run("git", "reset", "--hard", "--quiet", commit, cwd=project.path)
        if seen_before is not None:
            seen.write_bytes(seen_before)


def records_in(project: Project) -> int:
    return len(list((local_registry(project) / project.package / "log").glob("*.json")))


def audit_fails(project: Project, *arguments: str) -> str:
    result = project.ops("audit", *arguments, check=False)
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def test_cutting_forging_or_rewriting_the_newest_records_fails_audit(lived):
    project, _ = lived
    head = project.ops("audit").stdout.strip().splitlines()[-2].split()[1]
    newest = records_in(project)
    serving_before = project.serving()
    idle = 2 if serving_before == 1 else 1
    promote_idle = ["promoted", {"version": idle, "stage": "production", "from_version": 1}]
    with restored(project) as registry:
        (registry / project.package / "log" / f"{newest:010d}.json").unlink()
        assert "its newest records were deleted" in audit_fails(project)
        assert "its newest records were deleted" in audit_fails(project, "--expect-head", head)
    with restored(project):
        mallory = forge(project, newest, "mallory", [promote_idle])
        message = audit_fails(project)
        assert f"record {newest + 1:010d}.json is signed by key {mallory}" in message
        assert "trust/keys.json does not trust" in message
        refused = project.ops("deploy", "--version", str(idle), "--approved-by", "x", check=False)
        assert refused.returncode == 2 and mallory in refused.stderr
    with restored(project):
        # The whole chain rewritten, every hash recomputed, by someone without the keys.
        forge(project, 0, "mallory", [["promoted", {"version": 1, "stage": "production"}]])
        assert "record 0000000001.json is signed by key" in audit_fails(project)
    with restored(project):
        # An insider with the real deploy key replaces the newest record: the anchors notice.
        forge(project, newest - 1, "deploy", [promote_idle])
        assert f"record {newest:010d}.json is not the one" in audit_fails(project)
        assert "the log was rewritten" in audit_fails(project)
    with restored(project) as registry:
        # A signature of the wrong shape is named, not a traceback.
        record = registry / project.package / "log" / f"{newest:010d}.json"
        document = json.loads(record.read_text())
        document["signature"]["key"] = ["not", "a", "key"]
        record.write_text(json.dumps(document))
        assert f"record {newest:010d}.json is not signed" in audit_fails(project)
    with restored(project):
        # A publish key may not promote.
        forge(project, newest, "publish", [promote_idle])
        assert "only a deploy key may sign promoted" in audit_fails(project)
    assert project.serving() == serving_before


def test_audit_fails_on_a_missing_or_empty_registry(lived, tmp_path):
    project, _ = lived
    typo = {"LAB2PROD_REGISTRY": str(tmp_path / "registyr")}
    missing = project.ops("audit", check=False, env=typo)
    assert missing.returncode == 2
    assert "no audit records at" in missing.stderr and "a mistyped location" in missing.stderr
    assert not (tmp_path / "registyr").exists()
    allowed = project.ops("audit", "--allow-empty", env=typo)
    assert "has no records yet" in allowed.stdout
    bad_head = project.ops("audit", "--expect-head", "7:abc", check=False)
    assert bad_head.returncode == 2 and "SEQUENCE:SHA256" in bad_head.stderr


# A pickle that, when loaded, leaves a file behind: proof that code ran.
EVIL_BUNDLE = """
import io, json, pickle, sys, zipfile
from pathlib import Path
from {package}.ops.audit import sha256

class Payload:
    def __reduce__(self):
        return (Path(sys.argv[3]).touch, ())

source, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(source) as archive:
    members = {{name: archive.read(name) for name in archive.namelist()}}
members.pop("manifest.sig", None)
manifest = json.loads(members.pop("manifest.json"))
members["model/model.joblib"] = pickle.dumps(Payload())
members.pop("model/model.onnx", None)
manifest["serving_model"] = {{"member": "model/model.joblib", "reason": "forced"}}
manifest["members"] = {{name: sha256(body) for name, body in sorted(members.items())}}
members["manifest.json"] = json.dumps(manifest).encode()
with zipfile.ZipFile(target, "w") as archive:
    for name, body in members.items():
        archive.writestr(name, body)
print(sha256(Path(target).read_bytes()))
"""


def test_a_pickle_in_a_bundle_never_runs_unverified(lived, tmp_path):
    project, _ = lived
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.zip"
    bundles = local_registry(project) / project.package / "bundles"
    source = next(bundles.glob("*.zip"))
    python = project.path / ".venv" / "bin" / "python"
    script = EVIL_BUNDLE.format(package=project.package)
    digest = run(python, "-c", script, source, evil, marker, cwd=project.path).stdout.strip()
    rows = str(project.path / "data" / "prepared" / "holdout.parquet")
    scored = tmp_path / "out.parquet"
    port = str(free_port())
    for command in (
        ["serve", "--bundle", str(evil), "--port", port],
        ["score", rows, str(scored), "--bundle", str(evil)],
    ):
        refused = project.ops(*command, check=False)
        assert refused.returncode == 2, refused.stdout
        assert "is not signed" in refused.stderr and "--trust-unsigned" in refused.stderr
        assert not marker.exists(), "the pickle ran"
    assert not scored.exists()
    # Published in the registry by someone with write access but no trusted key.
    with restored(project) as registry:
        shutil.copy(evil, registry / project.package / "bundles" / f"{digest}.zip")
        published = json.loads(
            (registry / project.package / "log" / "0000000001.json").read_text()
        )["body"]["details"]
        newest = records_in(project)
        versions = project.ops("audit").stdout.count(" published ")
        forge(
            project,
            newest,
            "mallory",
            [
                ["published", {**published, "version": versions + 1, "bundle_sha256": digest}],
                ["promoted", {"version": versions + 1, "stage": "production"}],
            ],
        )
        for command in (["serve", "--port", port], ["score", rows, str(scored)]):
            refused = project.ops(*command, check=False)
            assert refused.returncode == 2
            assert f"record {newest + 1:010d}.json is signed by key" in refused.stderr
        assert not marker.exists(), "the pickle ran"


def test_a_service_stops_being_ready_when_the_log_is_cut_or_forged(lived):
    project, _ = lived
    rows = holdout_records(project)[:2]
    serving_now = project.serving()
    with restored(project) as registry, serving(project) as client:
        assert client.call("/ready")[0] == 200
        newest = records_in(project)
        forge(project, newest, "mallory", [["promoted", {"version": 1, "stage": "production"}]])
        deadline = time.monotonic() + 30
        while client.call("/ready")[0] == 200:
            assert time.monotonic() < deadline, "the service still says it is ready"
            time.sleep(0.2)
        status, detail = client.call("/ready")
        assert status == 503 and "cannot be trusted" in detail["detail"]
        # It keeps answering with the version it verified.
        status, reply = client.call("/predict", rows)
        assert status == 200 and reply["model_version"] == serving_now
        (registry / project.package / "log" / f"{newest + 1:010d}.json").unlink()
        (registry / project.package / "log" / f"{newest:010d}.json").unlink()
        deadline = time.monotonic() + 30
        while "were deleted" not in json.dumps(client.call("/ready")[1]):
            assert time.monotonic() < deadline, "the service did not notice the cut"
            time.sleep(0.2)


def test_a_bundle_holds_only_the_code_git_tracks(lived):
    project, _ = lived
    secret = project.path / "src" / project.package / "local_secrets.py"
    exclude = project.path / ".git" / "info" / "exclude"
    original = exclude.read_text() if exclude.exists() else ""
    secret.write_text("TOKEN = 'hunter2'\n")
    exclude.write_text(original + f"\nsrc/{project.package}/local_secrets.py\n")
    try:
        built = Path(project.nox("package").stdout.strip().splitlines()[-1])
        with zipfile.ZipFile(built) as bundle:
            names = bundle.namelist()
            manifest = json.loads(bundle.read("manifest.json"))
        assert f"code/{project.package}/train.py" in names
        assert f"code/{project.package}/local_secrets.py" not in names
        assert manifest["dirty"] is False
        assert "manifest.sig" in names
    finally:
        secret.unlink()
        exclude.write_text(original)


# `package`, killed by the kernel in the middle of putting the bundle in place.
KILLED_PACKAGE = """
import os, signal
from {package}.ops import cli

def die(*arguments):
    os.kill(os.getpid(), signal.SIGKILL)

os.replace = die
cli.main(["package"])
"""


def test_a_killed_package_leaves_no_bundle_and_the_next_run_cleans_up(lived):
    project, _ = lived
    bundles = project.path / "build" / "bundles"
    shutil.rmtree(bundles, ignore_errors=True)
    bin_dir = project.path / ".venv" / "bin"
    script = KILLED_PACKAGE.format(package=project.package)
    env = project.process_env | {"PATH": f"{bin_dir}:{project.process_env['PATH']}"}
    killed = subprocess.run([bin_dir / "python", "-c", script], cwd=project.path, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not list(bundles.glob("*.zip")), "a killed package left a bundle under its final name"
    leftovers = list(bundles.glob(".*.partial"))
    assert leftovers
    again = project.nox("package")
    assert f"removed {leftovers[0].name}, left by a killed run" in again.stdout + again.stderr
    assert not list(bundles.glob(".*.partial"))
    assert len(list(bundles.glob("*.zip"))) == 1


def test_a_stopped_retrain_says_what_it_found_and_resumes(lived):
    project, _ = lived
    params = project.path / "params.yaml"
    params.write_text(params.read_text().replace("C: 1.0", "C: 0.8"))
    run("git", "commit", "--quiet", "-am", "Try C=0.8", cwd=project.path)
    # What a retrain killed after `dvc repro` leaves: new results, not committed.
    project.nox("repro")
    stopped = project.nox("retrain", check=False)
    assert stopped.returncode != 0
    assert "found the uncommitted results of a retrain that was stopped (dvc.lock" in stopped.stdout
    assert "`nox -s retrain -- --resume` finishes it" in stopped.stdout
    resumed = project.nox("retrain", "--resume")
    assert "retrain: resuming with dvc.lock" in resumed.stdout
    assert "passed the deploy gate" in resumed.stdout
    assert run("git", "status", "--porcelain", cwd=project.path).stdout == ""


def test_rotating_a_key_retires_the_old_one_with_a_record(lived):
    project, _ = lived
    with restored(project):
        made = project.ops("keys", "new", "--role", "deploy", "--print")
        secret = made.stdout.strip().splitlines()[0]
        listed = project.ops("keys").stdout
        assert "deploy   retired after record" in listed and listed.count("active") == 2
        history = project.ops("audit").stdout
        assert "keys_changed" in history
        # The old key, still on this machine, may sign nothing more; the new one may.
        old = project.ops("rollback", "--approved-by", "x", "--reason", "y", check=False)
        assert old.returncode == 2 and "is not an active key" in old.stderr
        new = project.ops(
            "deploy", "--version", "1", "--approved-by", "Ada", check=False,
            env={"LAB2PROD_DEPLOY_KEY": secret},
        )  # fmt: skip
        assert "refused: version 1 already serves" in new.stderr or new.returncode == 0
        project.ops("audit")
        # Another rotation, with only a retired deploy key on this machine: the new key signs.
        project.ops("keys", "new", "--role", "deploy", "--print")
        project.ops("audit")
