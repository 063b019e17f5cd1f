"""cleanroom.malloc: big blocks come from the reusable heap instead of fresh mmaps."""

import json
import os
import subprocess
import sys

import pytest

from cleanroom.malloc import _libc

# While a 40 MB array (above glibc's largest mmap threshold) is alive, how many bytes of mmap'd chunks
# did malloc add (mallinfo2().hblkhd)? Under glibc's defaults the array is one; tuned, there are none.
PROBE = """
import ctypes, json
from cleanroom.malloc import _libc, tune_malloc
state = tune_malloc()
import numpy as np

class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = _libc()
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
a = np.ones(5_000_000)
print(json.dumps({"state": state, "mmapped": libc.mallinfo2().hblkhd - before}))
"""


def probe(setting: str) -> dict:
    env = {**os.environ, "CLEANROOM_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(_libc() is None or not hasattr(_libc(), "mallinfo2"), reason="needs glibc >= 2.33")
def test_tuned_malloc_serves_big_blocks_from_the_heap():
    default, tuned = probe("default"), probe("tuned")
    assert default["state"] == "default" and tuned["state"] == "tuned"
    assert default["mmapped"] >= 40_000_000, default
    assert tuned["mmapped"] == 0, tuned
