"""One `Settings` object, read from the environment (every variable is listed in README)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.cache import CacheLimits
from engine.pipeline import EngineOptions
from engine.protocol import TranslationConfig
from engine.translate import TranslateOptions


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    # False: no speech recognition; only a video's own captions and subtitle files are used.
    enable_whisper: bool = Field(default=True, description="ENABLE_WHISPER")
    whisper_model: str = Field(default="bundled", description="WHISPER_MODEL")
    # A server offers WHISPER_MODEL plus these (comma-separated); a job may ask for no other.
    whisper_models: str = Field(default="", description="WHISPER_MODELS")
    whisper_device: str = Field(default="auto", description="WHISPER_DEVICE")
    whisper_compute_type: str = Field(default="auto", description="WHISPER_COMPUTE_TYPE")
    whisper_batch_size: int = Field(default=0, ge=0, description="WHISPER_BATCH_SIZE")
    whisper_cpu_threads: int = Field(default=0, ge=0, description="WHISPER_CPU_THREADS")
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "subtide")
    cache_max_size_mb: float = Field(default=5000, ge=0)
    cache_audio_ttl_hours: float = Field(default=24, ge=0)
    cache_cleanup_interval_minutes: float = Field(default=30, ge=0)
    # None: each front end decides (the desktop CLI and app allow private URLs, servers don't).
    subtide_allow_private_urls: bool | None = None
    # The server's own LLM for translation (any OpenAI-compatible API).
    server_api_key: str | None = Field(default=None, repr=False)
    server_api_url: str | None = None
    server_model: str | None = None
    translation_batch_size: int = Field(default=25, ge=1, le=200)
    translation_context: int = Field(default=3, ge=0, le=20)
    translation_concurrency: int = Field(default=4, ge=1, le=64)
    translation_timeout: float = Field(default=60, gt=0)
    # Speaker labels: pyannote with a Hugging Face token or a local pipeline folder, else built-in.
    enable_diarization: bool = True
    hf_token: str | None = Field(default=None, repr=False)
    diarization_pipeline: str = "pyannote/speaker-diarization-community-1"
    # The HTTP server (`subtide serve`, the RunPod pod / load balancer role).
    port: int = Field(default=5001, ge=1, le=65535)
    port_health: int | None = Field(default=None, ge=1, le=65535)
    subtide_auth_token: str | None = Field(default=None, repr=False)
    engine_concurrency: int = Field(default=1, ge=1, le=16)
    max_upload_mb: float = Field(default=2000, gt=0)
    rate_limit_per_minute: int = Field(default=30, ge=0)
    sse_heartbeat_seconds: float = Field(default=15, gt=0)
    keep_jobs: int = Field(default=100, ge=1)
    platform: str | None = None
    # What one job may cost a server (its LLM key, its time); each refusal is a 400 or 413.
    max_json_kb: float = Field(default=1024, gt=0)
    max_target_langs: int = Field(default=10, ge=1)
    max_glossary_chars: int = Field(default=20_000, ge=0)
    max_description_chars: int = Field(default=500, ge=0, le=2000)
    # An upload has this long, plus a second per UPLOAD_MIN_KB_PER_SECOND it sends: a client
    # that trickles bytes can't hold a connection open for ever.
    upload_timeout_seconds: float = Field(default=30, gt=0)
    upload_min_kb_per_second: float = Field(default=10, gt=0)
    # Addresses whose X-Forwarded-For / -Proto headers are believed (uvicorn's list); none
    # by default, so a client can't pick the address the rate limit counts.
    forwarded_allow_ips: str = ""
    # A remote backend for `subtide run` and the app: a RunPod endpoint or pod, or a server.
    subtide_backend: str | None = None
    subtide_backend_key: str | None = Field(default=None, repr=False)

    def offered_models(self) -> list[str]:
        """The Whisper models a server lets a job ask for: its own first."""
        extra = [name.strip() for name in self.whisper_models.split(",")]
        return list(dict.fromkeys([self.whisper_model.strip(), *filter(None, extra)]))

    def engine_options(self, *, serves_others: bool) -> EngineOptions:
        allow_private = self.subtide_allow_private_urls
        if allow_private is None:
            allow_private = not serves_others
        return EngineOptions(
            whisper_enabled=self.enable_whisper,
            whisper_model=self.whisper_model,
            device=self.whisper_device,
            compute_type=self.whisper_compute_type,
            batch_size=self.whisper_batch_size,
            cpu_threads=self.whisper_cpu_threads,
            cache_dir=self.cache_dir.expanduser(),
            cache_limits=CacheLimits(
                max_size_mb=self.cache_max_size_mb,
                audio_ttl_hours=self.cache_audio_ttl_hours,
                cleanup_interval_minutes=self.cache_cleanup_interval_minutes,
            ),
            allow_private_urls=allow_private,
            llm=TranslationConfig(
                base_url=self.server_api_url or None,
                model=self.server_model or None,
                api_key=self.server_api_key or None,
            ),
            llm_timeout=self.translation_timeout,
            diarization_enabled=self.enable_diarization,
            diarization_pipeline=self.diarization_pipeline,
            hf_token=self.hf_token or None,
            translate=TranslateOptions(
                batch_size=self.translation_batch_size,
                context=self.translation_context,
                concurrency=self.translation_concurrency,
            ),
        )
