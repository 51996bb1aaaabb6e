"""Package discovery (everything else is in setup.cfg).

The installed ``edgepose`` package is assembled from three source folders: ``edgepose/`` itself and
the top-level ``converters/`` and ``calib/``, installed as ``edgepose.converters`` and
``edgepose.calib``. Every sub-package below each folder is found here, so a new one cannot be left
out of the wheel (an editable install would hide that).
"""
from setuptools import find_packages, setup

#: installed package -> source folder
ROOTS = {"edgepose": "edgepose", "edgepose.converters": "converters", "edgepose.calib": "calib"}

packages = []
for package, folder in ROOTS.items():
    packages += [package] + ["%s.%s" % (package, sub) for sub in find_packages(folder)]

setup(packages=packages, package_dir={pkg: folder for pkg, folder in ROOTS.items() if pkg != folder})
