"""Which model ids exist, who owns each, and the limits on creating more: one rule for both
backends (the embedded store holds a Registry; on Ray, the registry actor of service/cluster.py
does, for the whole cluster)."""

import secrets
from typing import Any

from core import ID_RE, ID_RULE
from service.errors import ServiceError
from service.settings import Settings


class Registry:
    """Every model id of the server (or cluster) with its owner; ids of unreadable
    checkpoints stay reserved."""

    def __init__(self) -> None:
        self.owners: dict[str, str | None] = {}
        self.skipped: dict[str, str] = {}  # ids whose checkpoint could not be read -> why

    def __len__(self) -> int:
        return len(self.owners)

    def visible(self, model_id: str, owner: str | None) -> bool:
        """Tells whether the model exists for `owner` (a model without owner is everyone's)."""
        if model_id not in self.owners:
            return False
        held_by = self.owners[model_id]
        return held_by is None or held_by == owner

    def ids_of(self, owner: str | None) -> list[str]:
        return [model_id for model_id in self.owners if self.visible(model_id, owner)]

    def free_id(self, model_id: Any, owner: str | None, settings: Settings) -> str:
        """Gives `model_id` (or a new id) if `owner` may register a model under it, else 409/422."""
        if len(self.owners) >= settings.max_models:
            raise ServiceError(422, "too_many_models", [
                {"loc": ["body"], "msg": f"the server holds {len(self.owners)} models, the limit "
                                         f"(GRADSERVE_MAX_MODELS) is {settings.max_models}", "type": "limit"}])
        per_key = settings.max_models_per_key
        if per_key is not None and owner is not None:
            held = sum(held_by == owner for held_by in self.owners.values())
            if held >= per_key:
                raise ServiceError(422, "too_many_models", [
                    {"loc": ["body"], "msg": f"this API key holds {held} models, the limit per key "
                                             f"(GRADSERVE_MAX_MODELS_PER_KEY) is {per_key}", "type": "limit"}])
        if model_id is None:
            return f"m-{secrets.token_hex(6)}"
        if not isinstance(model_id, str) or not ID_RE.fullmatch(model_id):
            raise ServiceError(422, "validation_error", [
                {"loc": ["body", "id"], "msg": ID_RULE, "type": "string_pattern_mismatch"}])
        if model_id in self.owners:
            raise ServiceError(409, "id_taken", f"a model {model_id!r} already exists")
        if model_id in self.skipped:
            raise ServiceError(409, "id_taken", f"the checkpoint of {model_id!r} on disk could not be read "
                                                f"({self.skipped[model_id]}); it is kept, choose another id")
        return model_id
