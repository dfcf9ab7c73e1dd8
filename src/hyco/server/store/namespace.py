"""The relay's view of its namespace: the configuration file's entities and rules (the seed, read-only) merged
with those of the :class:`~hyco.server.store.base.Store`, kept current from the store's change notifications.

The :class:`~hyco.server.registry.Registry` and the token checks read this view, never the store: a request
costs no store access. When a definition changes, the view pushes it into the registry; when keys or rules
change it calls ``on_rules_changed`` (the relay drops its cache of verified signatures, so a rotated key is
refused at once); when an entity is deleted or stops admitting listeners, it calls ``close_listeners`` (the
relay closes their control channels with 1001, protocol.md 2.8).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from hyco.exceptions import QuotaExceeded
from hyco.server.config import AuthorizationRule, HybridConnectionConfig, RelayConfig
from hyco.server.registry import HybridConnection, Registry
from hyco.server.store.base import Change, EntityRecord, RuleRecord, Store, rule_key

__all__ = ["Namespace", "RuleView"]

log = logging.getLogger("hyco.relay")


@dataclass(frozen=True, slots=True)
class RuleView:
    """A rule as the management API shows it.

    Attributes:
        scope: ``""`` (namespace) or the hybrid connection's path.
        rule: the rule.
        from_config: defined in the configuration file (read-only at run time).
        created_at, updated_at: seconds since the epoch (0 for configured rules).
    """

    scope: str
    rule: AuthorizationRule
    from_config: bool
    created_at: float = 0.0
    updated_at: float = 0.0


class Namespace:
    """Configured and stored entities and rules, merged; see the module docstring.

    Args:
        config: the seed (its hybrid connections and rules are read-only).
        store: where run-time entities and rules are kept.
        registry: receives every entity definition.
        on_rules_changed: called after any rule or key changed.
        close_listeners: called with a hybrid connection whose listeners must go (deleted, or disabled).
    """

    def __init__(
        self,
        config: RelayConfig,
        store: Store,
        registry: Registry,
        *,
        on_rules_changed: Callable[[], None],
        close_listeners: Callable[[HybridConnection], None],
    ) -> None:
        self.store = store
        self._registry = registry
        self._on_rules_changed = on_rules_changed
        self._close_listeners = close_listeners
        self._entities: dict[str, EntityRecord] = {}
        self._rules: dict[tuple[str, str], RuleRecord] = {}
        self._seed_entities: dict[str, HybridConnectionConfig] = {}
        self._seed_rules: tuple[AuthorizationRule, ...] = ()
        #: Namespace rules, the file's then the store's (the token checks read this on every request).
        self.namespace_rules: tuple[AuthorizationRule, ...] = ()
        self.reseed(config)

    async def open(self) -> None:
        """Load the store and follow its changes."""
        snapshot = await self.store.load()
        self._entities = {r.key: r for r in snapshot.entities}
        self._rules = {r.key: r for r in snapshot.rules}
        for key in {*self._entities, *(scope for scope, _ in self._rules if scope)}:
            self._refresh(key)
        self.store.watch(self._apply)
        self._rules_changed()

    def reseed(self, config: RelayConfig) -> None:
        """Take a new configuration's entities and rules (a reload); stored ones are kept.

        Entities that left the file (and are not stored) are removed and their listeners closed.
        """
        old = set(self._seed_entities)
        self._seed_entities = {hc.path.lower(): hc for hc in config.hybrid_connections}
        self._seed_rules = config.authorization_rules
        for key in old | set(self._seed_entities):
            self._refresh(key)
        self._rules_changed()

    # --- reads (management API) ---

    def rules(self, scope: str) -> list[RuleView]:
        """Every rule of ``scope`` (``""`` for the namespace), configured ones first."""
        key = scope.lower()
        if key:
            seed = self._seed_entities.get(key)
            configured = seed.authorization_rules if seed is not None else ()
        else:
            configured = self._seed_rules
        views = [RuleView(scope, rule, True) for rule in configured]
        views += [
            RuleView(r.scope, r.rule, False, r.created_at, r.updated_at)
            for k, r in self._rules.items()
            if k[0] == key
        ]
        return views

    def rule(self, scope: str, name: str) -> RuleView | None:
        """The rule ``name`` of ``scope`` (case-insensitive), if any."""
        return next((v for v in self.rules(scope) if v.rule.name.lower() == name.lower()), None)

    def record(self, path: str) -> EntityRecord | None:
        """The stored record of an entity (None for configured and auto-created ones)."""
        return self._entities.get(path.lower())

    def from_config(self, path: str) -> bool:
        """Whether the entity is defined in the configuration file."""
        return path.lower() in self._seed_entities

    # --- changes ---

    def _apply(self, change: Change) -> None:
        key = change.entity.lower()
        record = change.record
        if change.rule_name is None:
            if isinstance(record, EntityRecord):
                self._entities[key] = record
            else:
                self._entities.pop(key, None)
                for rk in [k for k in self._rules if k[0] == key]:
                    del self._rules[rk]
        else:
            if isinstance(record, RuleRecord):
                self._rules[record.key] = record
            else:
                self._rules.pop(rule_key(change.entity, change.rule_name), None)
            self._rules_changed()
        if key:
            self._refresh(key)

    def _rules_changed(self) -> None:
        self.namespace_rules = self._seed_rules + tuple(r.rule for k, r in self._rules.items() if not k[0])
        self._on_rules_changed()

    def _refresh(self, key: str) -> None:
        """Push the merged definition of entity ``key`` into the registry (or remove it)."""
        definition = self._definition(key)
        if definition is None:
            gone = self._registry.get(key)
            if gone is not None and not gone.auto_created:
                self._registry.undefine(key)
                self._close_listeners(gone)
            return
        try:
            hc = self._registry.define(definition)
        except QuotaExceeded as exc:  # on load: keep serving what fits, say what did not
            log.error("hybrid connection %s not loaded: %s", definition.path, exc.description)
            return
        if not definition.status.admits_listeners and hc.listeners:
            self._close_listeners(hc)

    def _definition(self, key: str) -> HybridConnectionConfig | None:
        stored_rules = tuple(r.rule for k, r in self._rules.items() if k[0] == key)
        seed = self._seed_entities.get(key)
        if seed is not None:
            return replace(seed, authorization_rules=seed.authorization_rules + stored_rules)
        record = self._entities.get(key)
        if record is None:
            return None
        return HybridConnectionConfig(
            path=record.path,
            requires_client_authorization=record.requires_client_authorization,
            authorization_rules=stored_rules,
            user_metadata=record.user_metadata,
            status=record.status,
            inspect=record.inspect,
        )
