"""allocator.keep_freed_memory: which glibc settings it makes, once, and when it leaves the allocator alone."""
import ctypes
import sys

import pytest

from crossgate import allocator


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


@pytest.fixture
def fake_libc(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc if name == "libc.so.6" else None)
    monkeypatch.setattr(allocator, "_ALLOCATOR_TUNED", False)
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"):
        monkeypatch.delenv(name, raising=False)
    return libc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_keeps_freed_memory_on_the_heap_once(fake_libc):
    allocator.keep_freed_memory()
    allocator.keep_freed_memory()
    assert fake_libc.calls == [(allocator.M_TRIM_THRESHOLD, 1 << 30), (allocator.M_TOP_PAD, 1 << 30),
                               (allocator.M_MMAP_MAX, 0)]


@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"])
def test_a_user_setting_of_their_own_is_left_alone(fake_libc, monkeypatch, name):
    monkeypatch.setenv(name, "0")
    allocator.keep_freed_memory()
    assert fake_libc.calls == []


def test_no_glibc_is_no_error(monkeypatch):
    monkeypatch.setattr(allocator, "_ALLOCATOR_TUNED", False)

    def missing(name):
        raise OSError("libc.so.6: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    allocator.keep_freed_memory()  # the allocator as it is, and no exception
