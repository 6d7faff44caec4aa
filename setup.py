"""Packaging beyond pyproject.toml: the repository keeps its top-level ``shared/`` and
``services/`` folders, and the wheel installs them as ``rtml.shared`` and ``rtml.services``
so that a user's site-packages gets one ``rtml`` package and no generic top-level names
that collide with other code. pyproject.toml cannot express a folder-to-package mapping
that follows the tree, hence this file."""

from setuptools import find_packages, setup

NAMESPACED_FOLDERS = ("shared", "services")

packages = find_packages(include=["rtml", "rtml.*"])
package_dir = {}
for folder in NAMESPACED_FOLDERS:
    package_dir[f"rtml.{folder}"] = folder
    packages += [f"rtml.{name}" for name in find_packages(include=[folder, f"{folder}.*"])]

setup(packages=packages, package_dir=package_dir)
