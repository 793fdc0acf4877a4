"""The built wheel works on its own: installed into a new virtual environment outside the checkout, it
finds the bundled datasets and reproduces BM25 on SciFact.

The new environment reuses the heavy dependencies already installed here through a ``.pth`` line
naming this interpreter's site-packages; ``.pth`` files inside that folder (the editable install of
the checkout) are not run, so only the wheel can provide ``rerank`` there.
"""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_wheel_installs_into_a_new_environment_and_finds_bundled_data(tmp_path):
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT, cwd=tmp_path)
    wheel = next(wheels.glob("rerank-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode().splitlines()
    assert "Requires-Python: >=3.11" in meta  # typing.Self and tomllib
    core = [line for line in meta if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert core and not any("rank-bm25" in line or "rank_bm25" in line for line in core)  # tests and benchmarks only

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip())
    (site / "shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RERANK_DATASETS", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", RERANK_CACHE=str(tmp_path / "cache"))
    probe = "import importlib.util as u; s = u.find_spec('rerank'); print(s.origin if s else None)"
    assert run(python, "-c", probe, cwd=tmp_path, env=env).stdout.strip() == "None"  # the checkout is not importable

    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path, env=env)
    assert run(python, "-c", probe, cwd=tmp_path, env=env).stdout.strip().startswith(str(site))
    where = "from rerank.data import dataset_dirs; print(dataset_dirs()[0])"
    assert run(python, "-c", where, cwd=tmp_path, env=env).stdout.strip() == str(site / "rerank_datasets")

    out = run(venv / "bin" / "rerank", "eval", "--dataset", "scifact", "--pipeline", "bm25", "--metrics", "ndcg@10",
              cwd=tmp_path, env=env)
    assert "0.6762" in out.stdout
    # Not a terminal (as make demo in CI): one progress line per stage, on stderr.
    lines = out.stderr.splitlines()
    assert "load: scifact, 5183 documents, 300 queries, 300 judged (with a relevant document)" in lines
    assert any(line.startswith("index: BM25() on scifact, 5183 documents") for line in lines)
    assert "evaluate: 1 pipeline on scifact ..." in lines
    assert any(line.startswith("done: bm25 on scifact, 300 queries in ") for line in lines), lines
