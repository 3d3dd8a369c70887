"""The managed-upgrade process as data: the model read from ``process.yaml`` and its Mermaid diagram."""
