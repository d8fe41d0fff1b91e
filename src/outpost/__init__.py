"""Outpost CI: a control plane in one place, outbound-only runners behind the firewall."""

__version__ = "0.1.0"
