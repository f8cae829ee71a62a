"""HTTP ingress: the API of SPEC §4, served by aiohttp inside each worker."""
