"""Test set-up shared by every test: a local Hub (tests/hub_server.py) instead of huggingface.co.

huggingface_hub reads HF_ENDPOINT, HF_HOME, HF_TOKEN and HF_HUB_DISABLE_XET once, when it is first
imported, so they are set here, at import time, before any test module can import it. Subprocesses
started by tests inherit them through os.environ (HUB_URL is the same value as HF_ENDPOINT).

Fixtures: `hub_server` (session) is the running LocalHub; `hub` (function) is the same server, with
injected faults cleared after the test. Use unique repo ids per test: the storage is shared.
"""

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
for _p in (str(REPO_ROOT), str(TESTS_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

if "huggingface_hub" in sys.modules:  # too late: its constants already point at the real Hub
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could set HF_ENDPOINT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HUB_PORT = _free_port()
HUB_URL = f"http://127.0.0.1:{HUB_PORT}"
_TMP = tempfile.mkdtemp(prefix="pdetraversal-tests-")
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
os.environ.update({
    "HF_ENDPOINT": HUB_URL,
    "HF_HOME": os.path.join(_TMP, "hf_home"),  # also the download cache: HF_HOME/hub
    "HF_TOKEN": "hf_local_test_token",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_XET": "1",  # plain HTTP both ways; commit POSTs are then not retried on 5xx
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
})
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH"):
    os.environ.pop(_var, None)

from hub_server import LocalHub  # noqa: E402


@pytest.fixture(scope="session")
def hub_server():
    server = LocalHub(os.path.join(_TMP, "hub_storage"), port=HUB_PORT).start()
    yield server
    server.stop()


@pytest.fixture
def hub(hub_server):
    hub_server.clear_faults()
    yield hub_server
    hub_server.clear_faults()
