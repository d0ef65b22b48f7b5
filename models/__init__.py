"""Data shapes shared by every layer: policies, reports, settings, job-store tables."""
