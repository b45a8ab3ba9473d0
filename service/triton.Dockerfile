# NVIDIA's Triton with torch for the Python-backend generator model (model_repository/).
# Triton 24.10 is server 2.51, the same server the nvidia-pytriton wheel runs locally.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
# The exported generators are torch.export programs: load them with the torch that wrote them.
# OpenCV: the model encodes hints itself with contract/ (the fill regions are connected components).
RUN pip install --no-cache-dir "torch==2.13.0" "numpy<2" "opencv-python-headless>=4.8,<4.11"
COPY contract /opt/sketch2color/contract
ENV PYTHONPATH=/opt/sketch2color
