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
