"""The engine's exceptions: one root, one tree, each class where its concept lives.

Every exception the engine defines derives from :class:`EngineError`, so the command line
catches one type and prints one line (``--debug`` shows the traceback). The tree below is
the whole list: each class, the module that defines it, and what it means.
tests/unit/test_errors.py walks every engine module and fails when a class is missing here
or sits under another parent than drawn.

    EngineError                   engine.errors            the root; ``exit_code`` for the CLI
    ├── ConfigError               engine.errors            engine.yaml or the environment is wrong
    ├── CampaignFileError         engine.errors            a campaign file is wrong (all problems)
    ├── AudienceFileError         engine.audiencefile      audience file missing or outside [1]
    ├── CampaignError             engine.campaigns         campaign cannot change or run as asked
    ├── ContactsError             engine.phones            contacts file, region or number unusable
    ├── DatabaseError             engine.errors            PostgreSQL is unreachable or refused
    │   └── MigrationError        engine.errors            a migration cannot be applied
    ├── PricingError              engine.errors            no price for a destination
    │   └── NoRateError           engine.pricing           no prefix and no default rate [1]
    ├── NotGsmError               engine.sms               GSM-7 forced, text outside it [1]
    ├── RenderError               engine.templates         one recipient's message cannot render
    ├── TemplateLimitError        engine.template_limits   a template went past a limit
    ├── LinkError                 engine.links             tracked links cannot be set up for a run
    ├── _NotConstant              engine.template_sandbox  expression needs recipient values [2]
    ├── RunStopped                engine.message_rows      run left 'expanding' mid-expansion [2]
    ├── Unstorable                engine.receipts          events PostgreSQL cannot hold
    ├── WriterStopped             engine.receipt_writer    the writer is not running: retry
    ├── ReportError               engine.reports           no such campaign or run, cannot write
    ├── NotConfirmed              engine.cli.confirm       a destructive command not confirmed
    ├── PruneError                engine.prune             a prune cannot be done as asked
    ├── ProviderError             engine.errors            a provider call failed
    │   ├── ProviderTemporaryError  engine.errors          provably not accepted; safe to retry
    │   └── ProviderPermanentError  engine.errors          rejected; never retry
    ├── CheckFailed               engine.providers.results       account check failed
    ├── MalformedWebhook          engine.providers.webhook_body  unreadable webhook body
    └── BadRequest                engine.simulator.model   a request the simulator refuses [3]

[1] Also a ``ValueError`` (the engine parent first): ``AudienceFileError`` is raised inside
    the campaign model's pydantic validators, which report only ``ValueError`` at the
    field's line; ``NoRateError`` and ``NotGsmError`` are a value that cannot be
    priced or encoded, and their tests pin the ``ValueError`` contract.
[2] Control flow, never shown to a user: ``_NotConstant`` ends the constant scan of one
    template expression (engine.template_sandbox); ``RunStopped`` unwinds an expansion
    whose run was cancelled or paused, caught in engine.expander.
[3] The simulator's own: raised by a family's request parser, answered as that
    provider's 400 in its error format (engine.simulator.core); it never leaves the
    simulator.

Lower-level errors (asyncpg, aiohttp, yaml) are mapped at the boundary with
``raise ... from exc`` so the CLI can print one clear line.
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    exit_code = 1


class ConfigError(EngineError):
    """The configuration file or environment is invalid."""


class CampaignFileError(EngineError):
    """A campaign file is invalid; ``problems`` holds every ``path:line:col: field: what``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DatabaseError(EngineError):
    """PostgreSQL is unreachable or refused an operation."""


class MigrationError(DatabaseError):
    """A migration cannot be applied (for example an applied file was edited)."""


class PricingError(EngineError):
    """No price is known for a destination."""


class ProviderError(EngineError):
    """A provider call failed."""


class ProviderTemporaryError(ProviderError):
    """The provider provably did not accept the request; it may be retried."""


class ProviderPermanentError(ProviderError):
    """The provider rejected the request; it must not be retried."""
