"""Session-wide: the fork servers that the workflow's jobs start during the tests live in a dir
of this session and are terminated at its end (not left to their idle timeout, nor shared with
the user's own workflow runs)."""

from __future__ import annotations

import os

import pytest
from fork_servers import private_server_dir

from minialbert.workflow.forkserver import DIR_VARIABLE


@pytest.fixture(autouse=True, scope="session")
def session_fork_servers():
    before = os.environ.get(DIR_VARIABLE)
    with private_server_dir() as path:
        os.environ[DIR_VARIABLE] = str(path)
        yield path
        if before is None:
            del os.environ[DIR_VARIABLE]
        else:
            os.environ[DIR_VARIABLE] = before
