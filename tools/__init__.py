"""Development tools of this repository, not installed with the package: the
mutation run (:mod:`tools.mutation`, ``tox -e mutation``)."""
