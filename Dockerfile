# A Hugging Face Docker Space (or any container host): serves the app on port 7860.
FROM python:3.11-slim

# Noto CJK: figures show captions in Chinese, Japanese and Korean (matplotlib falls back to it; see render.py).
RUN apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2
WORKDIR /home/user/app

# CPU builds of torch keep the image small; the rest comes from requirements.txt, which also installs this
# package (editable), so the source is copied first.
RUN pip install --no-cache-dir --user torch torchvision --index-url https://download.pytorch.org/whl/cpu
COPY --chown=user . .
RUN pip install --no-cache-dir --user -r requirements.txt

EXPOSE 7860
CMD ["python", "app.py"]
