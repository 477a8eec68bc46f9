"""Put the example data and the pipeline under DVC, inside the new project's locked environment.

`setup_project.py` runs this with the project's interpreter (`uv run`), so DVC and the science
package come from uv.lock. Steps: write the example raw data, `dvc init`, configure the default
remote, infer the input contract (schema.py) from the example data, `dvc add data/raw`, run the
pipeline once and push data and outputs to the remote.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from dvc.cli import main as dvc

REMOTE_NAME = "storage"


def remote_url(answer: str, project: Path) -> str:
    """A URL stays as typed; a directory is made absolute so clones on this machine find it."""
    if "://" in answer:
        return answer
    directory = Path(answer).expanduser()
    if not directory.is_absolute():
        directory = (project / directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory)


def run_dvc(*arguments: str, required: bool = True) -> bool:
    print(f"lab2prod: $ dvc {' '.join(arguments)}", file=sys.stderr, flush=True)
    status = dvc(list(arguments))
    if status != 0 and required:
        sys.exit(f"lab2prod: `dvc {' '.join(arguments)}` failed (exit {status}); see above.")
    return status == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--package", required=True)
    parser.add_argument("--remote", required=True)
    args = parser.parse_args()
    project = Path.cwd()

    example = importlib.import_module(f"{args.package}.example")
    raw_file = example.write_raw_data(project / "data" / "raw")
    cli = importlib.import_module(f"{args.package}.ops.cli")
    inferred = cli.main(
        ["schema", str(raw_file.relative_to(project)), "--target", example.TARGET,
         "--task", example.TASK]
    )  # fmt: skip
    if inferred != 0:
        sys.exit("lab2prod: could not infer the contract from the example data; see above.")
    # A local key pair per role, so the lifecycle signs and verifies from the first retrain.
    if cli.main(["keys", "new", "--role", "all", "--new-project"]) != 0:
        sys.exit("lab2prod: could not make the local signing keys; see above.")

    run_dvc("init", "--quiet")
    run_dvc("config", "core.analytics", "false")
    run_dvc("config", "core.autostage", "true")
    url = remote_url(args.remote, project)
    run_dvc("remote", "add", "--default", REMOTE_NAME, url)
    run_dvc("add", "--quiet", "data/raw")
    run_dvc("repro", "--quiet")
    if not run_dvc("push", "--quiet", required=False):
        # An object store may need credentials this machine does not have yet; nothing is lost,
        # the data stays in the local cache until a later `dvc push`.
        print(
            f"lab2prod: could not push to the DVC remote {url}; set its credentials and run "
            "`nox -s run -- dvc push` before sharing the project.",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
