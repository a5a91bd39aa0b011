"""Sidekiq's Redis key names (docs/sidekiq-redis.md), with 6.x's optional redis-namespace prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under a namespace ("" for none; Sidekiq 7+ refuses namespaces)."""

    namespace: str = ""

    def key(self, name: str) -> str:
        return f"{self.namespace}:{name}" if self.namespace else name

    @property
    def processed(self) -> str:
        return self.key("stat:processed")

    @property
    def failed(self) -> str:
        return self.key("stat:failed")

    @property
    def schedule(self) -> str:
        return self.key("schedule")

    @property
    def retry(self) -> str:
        return self.key("retry")

    @property
    def dead(self) -> str:
        return self.key("dead")

    @property
    def processes(self) -> str:
        return self.key("processes")

    @property
    def queues(self) -> str:
        return self.key("queues")

    def queue(self, name: str) -> str:
        return self.key(f"queue:{name}")

    def process(self, identity: str) -> str:
        return self.key(identity)

    def work(self, identity: str) -> str:
        """The busy-work hash of Sidekiq 6.4.2 and later."""
        return self.key(f"{identity}:work")

    def workers(self, identity: str) -> str:
        """The busy-work hash of Sidekiq 6.4.1 and earlier."""
        return self.key(f"{identity}:workers")

    def signals(self, identity: str) -> str:
        return self.key(f"{identity}-signals")
