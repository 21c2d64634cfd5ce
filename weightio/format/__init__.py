"""The file on disk: safetensors I/O, the archive, sharding, atomic writes, streaming, digests, limits."""
