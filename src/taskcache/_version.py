"""The package version (read by the build and by ``taskcache --version``); nothing else."""

__version__ = "0.1.0"
