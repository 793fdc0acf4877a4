"""Package list for setuptools (the rest of the metadata is in pyproject.toml).

The bundled collections in ``datasets/`` ship inside the wheel as the data-only package
``rerank_datasets``, so an installed rerank finds them without a clone of the repository.
"""

from setuptools import find_namespace_packages, find_packages, setup

data = ["rerank_datasets", *(f"rerank_datasets.{p}" for p in find_namespace_packages("datasets"))]
setup(packages=[*find_packages(include=["rerank", "rerank.*"]), *data],
      package_dir={"rerank_datasets": "datasets"},
      package_data={"rerank": ["*.toml", "prompts/*.yaml", "data/*.toml"], **{p: ["*"] for p in data}})
