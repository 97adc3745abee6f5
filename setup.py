"""Package layout that pyproject.toml cannot say: the top-level ``assets/`` and ``configs/`` folders ship as
``videogen.assets`` and ``videogen.configs``.

The bundled demo model lives in the repository's ``assets/demo-model/`` (issue 7) and the training configs the
CLI points to in ``configs/``. Mapping them to packages puts them inside the wheel at ``videogen/assets/`` and
``videogen/configs/``, where `videogen.bundled` finds them; a checkout finds them at ``<repo>/assets/`` and
``<repo>/configs/`` instead. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["videogen*"]), "videogen.assets", "videogen.configs"],
    package_dir={"videogen.assets": "assets", "videogen.configs": "configs"},
)
