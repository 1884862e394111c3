"""Where documents come from and where output goes: local folders and S3."""
