"""The service's settings: one class, read from `GRADSERVE_*` environment variables."""

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything configurable about a gradserve server, with its documented default.

    Each field `name` is read from the environment variable `GRADSERVE_<NAME>`.
    """

    model_config = SettingsConfigDict(env_prefix="GRADSERVE_", frozen=True)

    data_dir: Path = Field(Path("data"), description="Where models are checkpointed.")
    durability: Literal["step", "interval", "none"] = Field(
        "step",
        description="step: every step is on disk before its response; interval: dirty "
        "models are written every `durability_interval_seconds`; none: steps are written "
        "only at shutdown. Create, import, PUT parameters and delete are always written.",
    )
    durability_interval_seconds: float = Field(5.0, gt=0)
    history: bool = Field(True, description="Record every applied step (loss, lr, norms, flags) in "
                          "history/<id>.sqlite, under the step's durability, for GET /history and the dashboard.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer keys; empty means no authentication.",
    )
    max_body_bytes: int = Field(64 * MiB, ge=1)
    max_tensor_elements: int = Field(16_000_000, ge=1)
    max_parameters: int = Field(50_000_000, ge=1)
    max_models: int = Field(100, ge=1)
    max_models_per_key: int | None = Field(
        None, ge=1, description="Models one API key may hold; unset: only max_models bounds a key.")
    max_layers: int = Field(256, ge=1)
    max_tapes: int = Field(16, ge=1)
    tape_ttl_seconds: float = Field(300.0, gt=0)
    max_data_bytes: int = Field(
        2048 * MiB, ge=0, description="Bytes the data sets of a process (the server, or one Ray model host) hold "
        "together: rows a fit keeps on the server so they cross the wire once (0: none kept).")
    data_ttl_seconds: float = Field(
        3600.0, gt=0, description="A data set neither read nor added to for this long is dropped (404 "
        "data_not_found): the sets of a client gone mid-fit do not hold their memory until the model goes.")
    max_stream_batches: int = Field(10_000, ge=1, description="Batches one train_steps stream may carry.")
    request_timeout_seconds: float = Field(
        30.0, gt=0, description="Time budget of long work (a gradient check): past it, or once its "
        "client has gone, the work stops and the model's lock is free again (503 deadline_exceeded).")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A connection whose request head (request line and headers) is not "
        "complete this long after it opened, or after the last response, is closed.")
    blas_threads: int | None = Field(
        None, ge=1, description="BLAS threads per matrix product; unset: every core while one request "
        "computes, one each while several do (service/blas.py).")
    ray_address: str | None = Field(
        None, description="Run on Ray (`gradserve[ray]`): `local` starts a local instance with every port on "
        "127.0.0.1, `auto` or `host:port` joins a running cluster; unset: the embedded single process.")
    ray_namespace: str = Field("gradserve", min_length=1, description="The Ray namespace of the cluster's "
                               "registry, model hosts and shard workers.")
    ray_hosts: int = Field(4, ge=1, description="Model-host actors (processes) the models are packed into, "
                           "spread over the nodes; read by the front-end that starts the cluster's registry.")
    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value
