"""Deploying to Kubernetes integrations from the runner: reaching a cluster (`clusters`), the `deploy` step's image
update and rollout watch (`rollout`), its file apply (`manifests`) and the pull secrets it creates (`pullsecrets`).
Runner-side code that talks to the cluster's API with lightkube; the control plane imports only `clusters`."""
