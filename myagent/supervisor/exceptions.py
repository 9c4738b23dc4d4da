"""Errors of the front process.

SupervisorError
 ├── AgentFileError        the agent file cannot be loaded (the server refuses to start)
 ├── SandboxStartError     a sandbox or the zygote could not be started
 │    └── SandboxNotReady  a forked sandbox died or stayed silent before it was ready
 └── ConfigError           an option value is invalid
"""


class SupervisorError(Exception):
    """Base class of front-process errors; messages are shown to operators as is."""


class AgentFileError(SupervisorError):
    pass


class SandboxStartError(SupervisorError):
    pass


class SandboxNotReady(SandboxStartError):
    pass


class ConfigError(SupervisorError):
    pass
