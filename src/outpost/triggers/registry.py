"""The provider modules by name. Kept apart from `providers`, whose helpers the modules import, so that no
import runs in a circle."""

from __future__ import annotations

from outpost.triggers import bitbucket_server, github, gitlab
from outpost.triggers.event import Provider
from outpost.triggers.providers import ProviderModule

PROVIDER_MODULES: dict[Provider, ProviderModule] = {
    "github": github,
    "gitlab": gitlab,
    "bitbucket-server": bitbucket_server,
}
