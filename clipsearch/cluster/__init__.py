"""Past one machine, on Ray (`pip install 'clipsearch[cluster]'`): indexing with
`RayRunner`, search over vector shards held by Ray actors with `ShardedVectors`."""

from clipsearch.cluster.runner import ClusterOptions, RayRunner
from clipsearch.cluster.shards import ShardedVectors

__all__ = ["ClusterOptions", "RayRunner", "ShardedVectors"]
