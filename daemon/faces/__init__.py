"""Face and facial-landmark detection: MediaPipe's BlazeFace and FaceMesh weights run in torch.

``find_faces`` is the entry point; the models load on first use (assets/face_*.json/.safetensors).
"""

from gimp_draggan.faces.search import FaceLandmarks, find_faces

__all__ = ["FaceLandmarks", "find_faces"]
