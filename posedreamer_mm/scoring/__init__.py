"""2D pose scorers (mmpose+mmdet, mediapipe), label matching and head-facing cues used by the filter stages."""
