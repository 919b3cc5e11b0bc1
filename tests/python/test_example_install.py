"""The example script runs; `cmake --install build --component python` gives an importable
package (installed under a temporary prefix here, not into the system)."""
import glob
import os
import subprocess
import sys

from conftest import BUILD_DIR, SOURCE_DIR


def test_example_script_runs(tmp_path):
    script = os.path.join(SOURCE_DIR, "python", "examples", "round_trip.py")
    p = subprocess.run([sys.executable, script, str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "final_loss" in p.stdout and "tuned:" in p.stdout
    assert os.path.exists(tmp_path / "states" / "states.safetensors")


def test_install_component(tmp_path):
    p = subprocess.run(["cmake", "--install", BUILD_DIR, "--component", "python", "--prefix", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    found = glob.glob(str(tmp_path / "lib" / "python3*" / "dist-packages" / "s0" / "_s0*.so"))
    assert len(found) == 1, os.listdir(tmp_path)
    site = os.path.dirname(os.path.dirname(found[0]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = site
    code = "import s0, sys; print(s0.__file__); print(sorted(s0.__all__))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(site)
