"""Example estates that show Eraser on realistic schemas."""
