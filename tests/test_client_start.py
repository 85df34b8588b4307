"""What a client start loads. `python -m shell -c "status"` should not pay for numpy (~0.1 s):
only sealing helpers need it (codec.seal: viewing, granting), and they load it when first used.
A fresh interpreter, as a user's command starts one."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.localcloud import REPO, env

_PROBE = """
import sys
import shell.__main__
from actors.client.client_session import ClientSession
heavy = sorted(m for m in ("numpy", "codec.seal", "codec.covers", "codec.png") if m in sys.modules)
print(",".join(heavy))
from codec.sharecrypt import MAX_VIEWS
from codec import seal
print(seal.MAX_VIEWS == MAX_VIEWS and "numpy" in sys.modules)
"""


def test_the_client_starts_without_numpy_and_loads_it_for_the_seal() -> None:
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env(),
                       cwd=str(REPO), timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["", "True"]


_CTRL_C_WHILE_LOADING = """
import runpy, sys

class CtrlC:  # Ctrl-C lands while the client's modules load (the first seconds on a busy host)
    def find_spec(self, name, path=None, target=None):
        if name == "codec.names":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["shell", "--user", "alice", "-c", "status"]
runpy.run_module("shell", run_name="__main__", alter_sys=True)
"""


def test_ctrl_c_while_the_client_loads_exits_130_without_a_traceback() -> None:
    r = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_LOADING], capture_output=True,
                       text=True, env=env(), cwd=str(REPO), timeout=60, check=False)
    assert (r.returncode, r.stderr, r.stdout) == (130, "", "")
