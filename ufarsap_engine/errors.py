"""Error types that map onto the CLI's exit codes.

``UserError`` (exit 2) is for what the user can fix: bad flags, names, config, paths.
``EngineFailure`` (exit 1) is for failures of the run itself (a plugin that raises, a database
that went away). Both carry a one-line message; the CLI prints it without a traceback.
"""


class EngineError(Exception):
    exit_code = 1


class UserError(EngineError):
    """A mistake in what the user asked for; the message says how to fix it."""

    exit_code = 2


class EngineFailure(EngineError):
    """The run failed for a reason that is not the user's input."""

    exit_code = 1


class PluginError(EngineFailure):
    """A plugin failed to load or a hook misbehaved; names the plugin and the hook."""

    def __init__(self, plugin: str, hook: str, problem: str, distribution: str | None = None):
        self.plugin, self.hook, self.problem, self.distribution = plugin, hook, problem, distribution
        where = f" (distribution {distribution})" if distribution else ""
        super().__init__(f"plugin '{plugin}'{where} failed in {hook}: {problem}")
