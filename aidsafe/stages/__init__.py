"""The pipeline's steps, one module each; aidsafe.pipeline.PIPELINE lists them in order."""
