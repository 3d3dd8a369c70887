"""The upgrade's operations on an environment: stage, back up, upgrade, restore, re-apply settings, fix."""
