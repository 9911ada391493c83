"""Maps the top-level `methods/` and `datasets/` folders under the one import root `bench`.

A top-level package named `datasets` would shadow Hugging Face's `datasets`, so both folders
install as `bench.methods` and `bench.datasets` (see DESIGN.md).
"""

from setuptools import find_packages, setup

ROOTS = {"bench": "bench", "bench.methods": "methods", "bench.datasets": "datasets"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=ROOTS)
