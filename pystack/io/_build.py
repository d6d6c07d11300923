"""cffi build script (API mode): run by `pip install`, never at import time."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "xsk.h").read_text())
ffibuilder.set_source(
    "pystack.io._xsk",
    '#include <stdint.h>\n#include <stddef.h>\n#include "xsk.h"\n',
    sources=["pystack/io/xsk.c"],
    include_dirs=[str(HERE)],
    libraries=["xdp", "bpf"],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
