# NVIDIA's Triton with torch, and the model repository baked in: one image per set of weights,
# tagged with its version, so rolling out weights is rolling out an image (README "Deploy").
# 24.12 (server 2.53, CUDA 12.6, the driver requirements of 24.10) is built on Ubuntu 24.04,
# whose Python 3.12 runs the Python backend's stub and so the model code; 24.10's Ubuntu 22.04
# has Python 3.10, which cannot import contract/ (enum.StrEnum is 3.11+), and the project is
# written for 3.11+. TRITON_PYTHON is the image's Python, stated here only: the build stops if
# the image has another, and tests/test_deploy.py checks the model code against it (vermin).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.12-py3
FROM ${TRITON_IMAGE}
ARG TRITON_PYTHON=3.12
RUN python3 -c "import sys; v = '%d.%d' % sys.version_info[:2]; assert v == '${TRITON_PYTHON}', v"
# The exported generators are torch.export programs: load them with the torch that wrote them.
# OpenCV: the model encodes hints itself with contract/ (the fill regions are connected components).
# Ubuntu 24.04 marks its Python externally managed; in this image it is the only Python there is.
RUN python3 -m pip install --no-cache-dir --break-system-packages \
    "torch==2.13.0" "numpy<2" "opencv-python-headless>=4.8,<4.11"
COPY contract /opt/sketch2color/contract
ENV PYTHONPATH=/opt/sketch2color
# Last, so a new set of weights rebuilds one layer.
COPY model_repository /models
CMD ["tritonserver", "--model-repository=/models", "--log-verbose=0"]
