"""Test hook: with EDITCAPTION_TEST_HOLD_AFTER_SHARDS=N in the environment, every process of a job (the
driver and its Ray workers, which inherit the variable and this folder on PYTHONPATH) commits result
shards only while fewer than N are committed; a later commit waits forever. A test then kills the job
with N shards on disk and the rest certainly not, instead of racing the job to a moment in its run.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time

_HOLD = os.environ.get("EDITCAPTION_TEST_HOLD_AFTER_SHARDS")
_MODULE = "editcaption.synthesis.shards"


def _hold(module) -> None:
    commit = module.commit_shard

    def commit_or_wait(fs, root, table):
        fs.invalidate_cache(root)
        names = fs.ls(root, detail=False) if fs.exists(root) else []
        while sum(os.path.basename(n).startswith(module.SHARD_PREFIX) for n in names) >= int(_HOLD):
            time.sleep(3600)  # until the test kills the job
        return commit(fs, root, table)

    module.commit_shard = commit_or_wait


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_hold(module):
            exec_module(module)
            _hold(module)

        spec.loader.exec_module = exec_and_hold
        return spec


if _HOLD:
    sys.meta_path.insert(0, _PatchOnImport())
