"""Install the dependencies of the MXNet SSD training CLI.

``pip install -e .`` installs the pinned requirements and nothing else: the folders
symbol/, dataset/, config/, training/, evaluate/, export/ and tools/ carry common names and are meant to be
imported from the repository root (``python train.py ...``), never as top-level
site-packages.
"""
from pathlib import Path

from setuptools import setup


def read_requirements() -> list[str]:
    lines = Path(__file__).with_name("requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


setup(
    name="mxnet-ssd-cli",
    version="0.1.0",
    description="Single Shot MultiBox Detector training CLI on Apache MXNet 1.9",
    python_requires=">=3.9,<3.14",
    packages=[],
    py_modules=[],
    install_requires=read_requirements(),
)
