"""Face and facial-landmark detection: MediaPipe's BlazeFace and FaceMesh weights run in torch."""
