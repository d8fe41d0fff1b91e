"""Containers on the runner: the Docker Engine API client, image references, compose files, buildah."""
