"""Test set-up: four fake CPU devices, so that sharded and single-device results can be compared.

XLA reads the flag once, when jax initialises its backends, so it is set before anything imports jax.
"""
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=4"
# XLA:CPU aborts the process when the devices of a collective do not all reach it within 40 s ("only 3
# of them arrived"); with 4 fake devices on 2 cores shared by two test workers and their subprocesses,
# a device's thread can wait that long for a core. Ten minutes, so that a slow machine is only slow.
if "xla_cpu_collective_call_terminate_timeout_seconds" not in _flags:
    _flags += " --xla_cpu_collective_call_terminate_timeout_seconds=600"
os.environ["XLA_FLAGS"] = _flags.strip()

# Persistent XLA compilation cache: the end-to-end tests build the same programs in several runs and
# subprocesses (resume, CLI); on CPU a cached ResNet step loads in well under a second.
_CACHE = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "jax"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


import pytest  # noqa: E402

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The folder of real offline datasets (../shared/data); tests that need a file there skip without it."""
    return SHARED_DATA
