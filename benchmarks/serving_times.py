"""Serving and batch scoring of the example model, against MLflow's server and in-process calls.

The server is pinned to core 0 and the load generator (`hey`, Debian's package) to core 1; each
point runs 10 s after a 2 s warm-up, both servers with one worker. MLflow (pinned below) runs in
its own virtualenv with the project's own scikit-learn, pandas and numpy versions.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from projects import Project, free_port, project_env, render, run

MLFLOW = "mlflow==3.17.2"
SAVE_FOR_MLFLOW = """
import sys, joblib, mlflow.sklearn
mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2])
"""
FLOOR = """
import sys, time, statistics, joblib, pandas as pd
model = joblib.load(sys.argv[1])
row = pd.read_csv(sys.argv[2]).drop(columns="malignant").head(1)
times = []
for _ in range(2000):
    start = time.perf_counter(); model.predict_proba(row); times.append(time.perf_counter() - start)
print(statistics.median(times[200:]))
"""
MAKE_ROWS = """
import sys, numpy as np, pandas as pd
base = pd.read_csv(sys.argv[1]).drop(columns="malignant")
rows = int(sys.argv[2])
noise = np.random.default_rng(0).uniform(0.97, 1.03, size=(rows, base.shape[1]))
frame = pd.DataFrame(base.to_numpy()[np.arange(rows) % len(base)] * noise, columns=base.columns)
frame.to_parquet(sys.argv[3], index=False)
"""
IN_PROCESS = """
import sys, time, joblib, pandas as pd
model = joblib.load(sys.argv[1])
start = time.perf_counter()
frame = pd.read_parquet(sys.argv[2])
model.predict(frame)
print(time.perf_counter() - start)
"""


def wait_until_answering(url: str, body: bytes, process: subprocess.Popen, limit: float) -> float:
    """Seconds from now until the first successful POST."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stdout.read()}")
        try:
            request = urllib.request.Request(
                url, data=body, headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {limit} s")


def hey(url: str, body_file: Path, concurrency: int, duration: str) -> list[str]:
    """The load generator on core 1, POSTing the body file for a duration such as '10s'."""
    return ["taskset", "-c", "1", "hey", "-m", "POST", "-T", "application/json",
            "-D", str(body_file), "-c", str(concurrency), "-z", duration, url]  # fmt: skip


def load(url: str, body_file: Path, concurrency: int, seconds: int) -> dict[str, float]:
    subprocess.run(hey(url, body_file, concurrency, "2s"), capture_output=True, check=True)
    out = subprocess.run(
        hey(url, body_file, concurrency, f"{seconds}s"), capture_output=True, text=True, check=True
    ).stdout
    statuses = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": float(re.search(r"50% in ([\d.]+) secs", out).group(1)) * 1000,
        "p99_ms": float(re.search(r"99% in ([\d.]+) secs", out).group(1)) * 1000,
        "non_200": sum(int(n) for code, n in statuses.items() if code != "200"),
    }


def start(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        ["taskset", "-c", "0", *command],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--batch-rows", default="1000000,5000000")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lab2prod-serving-"))
    project = Project(render(scratch / "bench-project", {}), {})
    nox = ("uv", "run", "--locked", "nox", "-s")
    run(*nox, "retrain", cwd=project.path)
    run(*nox, "deploy", "--", "--approved-by", "bench", cwd=project.path)
    python = project.path / ".venv" / "bin" / "python"
    model_file = project.path / "models" / "model.joblib"
    holdout = project.path / "data" / "prepared" / "holdout.csv"
    record = {
        k: v
        for k, v in json.loads(
            run(
                python,
                "-c",
                (
                    "import pandas as pd, sys; frame = pd.read_csv(sys.argv[1]); "
                    "print(frame.drop(columns='malignant').head(1).to_json(orient='records'))"
                ),
                holdout,
                cwd=project.path,
            ).stdout
        )[0].items()
    }
    ours_body, mlflow_body = scratch / "ours.json", scratch / "mlflow.json"
    ours_body.write_text(json.dumps(record))
    mlflow_body.write_text(json.dumps({"dataframe_records": [record]}))

    floor = float(run(python, "-c", FLOOR, model_file, holdout, cwd=project.path).stdout)
    print(f"in-process predict_proba of one row: {floor * 1000:.3f} ms (the floor)")

    mlflow_env = scratch / "mlflow-env"
    run("uv", "venv", "-q", "-p", sys.executable, mlflow_env, cwd=scratch)
    versions = installed_versions(project.path)
    run(
        "uv",
        "pip",
        "install",
        "-q",
        "--python",
        mlflow_env / "bin" / "python",
        MLFLOW,
        *versions,
        cwd=scratch,
    )
    run(
        mlflow_env / "bin" / "python",
        "-c",
        SAVE_FOR_MLFLOW,
        model_file,
        scratch / "mlflow-model",
        cwd=scratch,
    )

    results = {}
    servers = {
        "lab2prod": (
            project.cli("serve", "--port", "{port}"),
            "/predict",
            ours_body,
        ),
        "mlflow": (
            [
                str(mlflow_env / "bin" / "mlflow"),
                "models",
                "serve",
                "-m",
                str(scratch / "mlflow-model"),
                "--env-manager",
                "local",
                "-w",
                "1",
                "-h",
                "127.0.0.1",
                "-p",
                "{port}",
            ],
            "/invocations",
            mlflow_body,
        ),
    }
    for name, (command, path, body) in servers.items():
        port = free_port()
        env = project_env() | {"PATH": f"{mlflow_env / 'bin'}:{project_env()['PATH']}"}
        server = start([part.format(port=port) for part in command], project.path, env)
        url = f"http://127.0.0.1:{port}{path}"
        try:
            startup = wait_until_answering(url, body.read_bytes(), server, 120)
            results[name] = {"start_s": startup}
            for concurrency in (1, 8):
                results[name][f"c{concurrency}"] = load(url, body, concurrency, args.seconds)
        finally:
            server.terminate()
            server.wait(timeout=20)
    print(json.dumps(results, indent=2))
    ours, theirs = results["lab2prod"], results["mlflow"]
    for concurrency in (1, 8):
        key = f"c{concurrency}"
        print(
            f"c={concurrency}: lab2prod {ours[key]['rps']:.0f} req/s p50 {ours[key]['p50_ms']:.2f} "
            f"ms p99 {ours[key]['p99_ms']:.2f} ms | mlflow {theirs[key]['rps']:.0f} req/s "
            f"p50 {theirs[key]['p50_ms']:.2f} ms p99 {theirs[key]['p99_ms']:.2f} ms | "
            f"ratio {ours[key]['rps'] / theirs[key]['rps']:.2f}x"
        )
    print(
        f"first reply after start: lab2prod {ours['start_s']:.2f} s, "
        f"mlflow {theirs['start_s']:.2f} s"
    )

    swap_under_load(project, python, ours_body, args.seconds)
    batch(project, python, model_file, holdout, scratch, args.batch_rows)


def installed_versions(project: Path) -> list[str]:
    """The model's libraries exactly as the project's environment has them."""
    frozen = run(
        "uv", "pip", "freeze", "--python", project / ".venv" / "bin" / "python", cwd=project
    ).stdout.splitlines()
    wanted = ("scikit-learn==", "pandas==", "numpy==", "scipy==", "joblib==")
    return [line for line in frozen if line.startswith(wanted)]


def swap_under_load(project: Project, python: Path, body: Path, seconds: int) -> None:
    """Requests that fail while production is deployed to and rolled back, 8 clients."""
    project.add_rows("bench-extra.csv", 40, 1.02)
    run("uv", "run", "--locked", "nox", "-s", "retrain", cwd=project.path)
    port = free_port()
    server = start(
        project.cli("serve", "--port", str(port), "--poll-seconds", "0.5"),
        project.path,
        project_env(),
    )
    url = f"http://127.0.0.1:{port}/predict"
    try:
        wait_until_answering(url, body.read_bytes(), server, 60)
        load_run = subprocess.Popen(
            hey(url, body, 8, f"{seconds}s"),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(seconds / 4)
        project.ops("deploy", "--version", "2", "--approved-by", "bench")
        time.sleep(seconds / 4)
        project.ops("rollback", "--approved-by", "bench", "--reason", "bench")
        out, _ = load_run.communicate()
        statuses = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
        errors = re.findall(r"Error distribution:(.*)", out, re.S)
        failed = sum(int(n) for code, n in statuses.items() if code != "200")
        print(
            f"deploy + rollback under 8 clients: {sum(map(int, statuses.values()))} requests, "
            f"{failed} non-200, transport errors: {errors[0].strip() if errors else 'none'}"
        )
    finally:
        server.terminate()
        server.wait(timeout=20)


def peak_rss_mb(command: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak resident memory in MB) of a command, from GNU time."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command],
        cwd=cwd,
        env=project_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - start
    return seconds, int(result.stderr.strip().splitlines()[-1]) / 1024


def batch(project, python, model_file, holdout, scratch, sizes) -> None:
    print("batch scoring of Parquet: ops score (chunks of 100k) vs in-process pipeline.predict")
    for rows in map(int, sizes.split(",")):
        source = scratch / f"rows-{rows}.parquet"
        run(python, "-c", MAKE_ROWS, holdout, str(rows), source, cwd=project.path)
        ours_s, ours_mb = peak_rss_mb(
            project.cli("score", str(source), str(scratch / f"scored-{rows}.parquet")),
            project.path,
        )
        plain_s, plain_mb = peak_rss_mb(
            [str(python), "-c", IN_PROCESS, str(model_file), str(source)], project.path
        )
        print(
            f"  {rows:>9} rows: ops score {rows / ours_s:,.0f} rows/s peak {ours_mb:,.0f} MB | "
            f"in-process predict {rows / plain_s:,.0f} rows/s peak {plain_mb:,.0f} MB"
        )


if __name__ == "__main__":
    main()
