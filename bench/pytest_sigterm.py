"""A pytest plugin for bench/gpu_check.sh's test sections (`pytest -p bench.pytest_sigterm`):
SIGTERM, which ends a section at its time limit, stops the run as Ctrl-C does, so that pytest
still writes its summary of what passed and failed before the cut."""
import signal


def stop(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # timeout(1) signals the whole process group too
    raise KeyboardInterrupt("SIGTERM: the section's time limit")


def pytest_configure(config):
    signal.signal(signal.SIGTERM, stop)
