"""Package layout that pyproject.toml cannot say: the top-level ``assets/`` folder ships as ``videogen.assets``.

The bundled demo model lives in the repository's ``assets/demo-model/`` (issue 7). Mapping it to the package
``videogen.assets`` puts it inside the wheel at ``videogen/assets/``, where `videogen.bundled` finds it;
a checkout finds it at ``<repo>/assets/`` instead. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["videogen*"]), "videogen.assets"],
    package_dir={"videogen.assets": "assets"},
)
