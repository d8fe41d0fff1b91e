"""The control plane: API, dispatch of builds to runners, and the store."""
