"""Test set-up: four fake CPU devices, so that sharded and single-device results can be compared.

XLA reads the flag once, when jax initialises its backends, so it is set before anything imports jax.
"""
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()
# No persistent compilation cache: XLA:CPU (jaxlib 0.10) programs with collectives over the 4 fake
# devices, loaded from it, deadlocked at a collective ("only 3 of them arrived", or every device
# thread asleep) when the whole suite ran on 2 cores.

import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The folder of real offline datasets (../shared/data); tests that need a file there skip without it."""
    return SHARED_DATA
