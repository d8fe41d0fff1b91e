"""The Kubernetes executor: each step attempt runs in a pod of its own, on the build volume (a claim)."""
