"""`ray_setup.shutdown_if_started`: a command ends the Ray it started and leaves its caller's running."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_a_command_leaves_its_callers_ray_and_ends_its_own(ray_shared):
    import ray

    from editcaption.ray_setup import init_ray, shutdown_if_started

    with shutdown_if_started():
        init_ray()  # what every job does first: here it joins the caller's Ray
    assert ray.is_initialized()
    ray.shutdown()
    with shutdown_if_started():
        init_ray()
        assert ray.is_initialized()
    assert not ray.is_initialized()
