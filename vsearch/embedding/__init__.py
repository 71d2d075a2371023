"""The embedding wing: the partition worker, partitions, thumbnails and the vector import."""
