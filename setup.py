# The cffi extension (AF_XDP rings, checksums) is built here, by `pip install`,
# in API mode: never compiled at import time.
from setuptools import setup

setup(cffi_modules=["pystack/io/_build.py:ffibuilder"])
