"""Reaching a customer host: SSH commands and SFTP, the host agent, file transfer, checksums, the config DB.

Also the path rules every write or delete on a host obeys (:mod:`~managed_upgrade.transport.path_policy`),
because the host agent applies the same rules on the host.
"""
