"""The rollback levels made real: flags off, configuration restored, pods restarted, the
target's template put back. Each writer is idempotent and says what it changed; nothing a
user owns is overwritten before an immutable copy of it exists."""
