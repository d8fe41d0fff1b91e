"""Store functions: every read and write of the control plane's data goes through here.

Each function takes an open AsyncSession inside a transaction and the caller's account; API handlers
and the UI call the same functions, so tenant checks live in one place.
"""
