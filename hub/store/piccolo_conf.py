"""Piccolo configuration for ``piccolo`` CLI users; the hub itself rebinds ``DB`` at startup.

``hub.store.store.bind`` assigns ``DB`` so that Piccolo's migration machinery, which
looks the engine up through ``PICCOLO_CONF``, uses the same engine as the hub.
"""

from piccolo.conf.apps import AppRegistry

from hub.base.config import load_settings
from hub.store.engines import engine_for_url

DB = engine_for_url(load_settings().resolved_database_url())
APP_REGISTRY = AppRegistry(apps=["hub.store.piccolo_app"])
