"""Projection adapters: z = W x + b per modality over the stored embeddings (see `model`),
fitted contrastively on a user's image-caption pairs (`fit`) or by PCA (`pca`)."""

from clipsearch.adapters.model import Adapter

__all__ = ["Adapter"]
