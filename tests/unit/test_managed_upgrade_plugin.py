"""The plugin Airflow finds in ``plugins/`` registers the activity listener and the deadline reference."""

from __future__ import annotations

from pathlib import Path

from airflow._shared.plugins_manager import _load_plugins_from_plugin_directory
from airflow.sdk._shared.listeners.listener import ListenerManager
from airflow.sdk._shared.listeners.spec import taskinstance

from managed_upgrade_airflow import activity_listener
from managed_upgrade_airflow.run_deadlines import ManagedUpgradeDeadline

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def test_the_plugins_folder_holds_one_plugin_and_hides_the_package_from_the_loader():
    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS))

    assert errors == {}
    assert [plugin.name for plugin in plugins] == ["managed_upgrade"]
    (plugin,) = plugins
    assert plugin.listeners == [activity_listener]
    assert plugin.deadline_references == [ManagedUpgradeDeadline]
    assert Path(plugin.source.path).name == "managed_upgrade_plugin.py"


def test_the_listener_implements_the_task_instance_hooks_the_task_runner_calls():
    manager = ListenerManager()
    manager.add_hookspecs(taskinstance)
    manager.add_listener(activity_listener)

    for hook in ("on_task_instance_running", "on_task_instance_success", "on_task_instance_failed"):
        implementations = getattr(manager.pm.hook, hook).get_hookimpls()
        assert [impl.plugin for impl in implementations] == [activity_listener], hook


def test_the_plugin_registers_the_views_app_and_their_links_without_loading_the_app():
    import sys

    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS))
    (plugin,) = plugins

    assert errors == {}
    (app,) = plugin.fastapi_apps
    assert app["url_prefix"] == "/managed-upgrade" and callable(app["app"])
    views = {view["name"]: view for view in plugin.external_views}
    assert views["Planned vs actual"]["destination"] == "dag_run"
    assert views["Planned vs actual"]["href"] == "/managed-upgrade/runs/{DAG_ID}/{RUN_ID}"
    assert {views[name]["destination"] for name in ("Upgrade portfolio", "My open actions")} == {"nav"}
    assert len({view["url_route"] for view in plugin.external_views}) == len(views)
    # every component loads the plugin file; only the api-server's first request builds the app
    assert "managed_upgrade_airflow.views.app" not in sys.modules or app["app"]._app is None
