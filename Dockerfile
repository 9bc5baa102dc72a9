# One image, two RunPod roles, chosen by MODE at run time:
#   MODE=pod        (default) the HTTP API and the app on PORT (dedicated pod, load balancer)
#   MODE=serverless the RunPod queue worker (runpod/handler.py)
# CUDA 12 with cuDNN 9 is what CTranslate2 4.x (faster-whisper) needs on the GPU.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models/hf \
    CACHE_DIR=/cache \
    PORT=5001 \
    MODE=pod \
    PYANNOTE_METRICS_ENABLED=false \
    GRADIO_ANALYTICS_ENABLED=False

# fonts-dejavu-core: a font for libass to burn subtitles with (video_burn).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ffmpeg curl \
    fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv \
 && useradd --create-home --uid 1000 subtide \
 && mkdir -p /cache /models \
 && chown subtide /cache /models

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY app app
COPY cloud cloud
COPY ui ui
COPY runpod runpod
# torch from PyPI is a CUDA build, which is what this image wants. resemblyzer only brings the
# built-in speaker model's weights, so its own dependencies are left out.
RUN pip install torch '.[pyannote,serverless]' \
 && pip install --no-deps resemblyzer==0.1.4 \
 && chown subtide /app

# The worker SDK keeps its job state in the working folder, so /app is the user's.
USER subtide
# Bake models in so a cold start downloads nothing:
#   --build-arg WHISPER_MODEL=large-v3
#   --secret id=hf_token,src=token.txt   (pyannote's gated pipeline; never stored in a layer)
ARG WHISPER_MODEL=bundled
ENV WHISPER_MODEL=${WHISPER_MODEL}
RUN python -c "from engine.asr import resolve_model; from pathlib import Path; \
print(resolve_model('${WHISPER_MODEL}', Path('/cache/models')))"
RUN --mount=type=secret,id=hf_token,uid=1000 \
    if [ -s /run/secrets/hf_token ]; then \
      HF_TOKEN="$(cat /run/secrets/hf_token)" python -c "import os; \
from engine.diarize_pyannote import PyannoteDiarizer; PyannoteDiarizer(token=os.environ['HF_TOKEN'])"; \
    fi

EXPOSE 5001
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD [ "$MODE" = serverless ] || curl -fsS "http://127.0.0.1:${PORT_HEALTH:-$PORT}/ping" || exit 1
CMD ["bash", "runpod/start.sh"]
