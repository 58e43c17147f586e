"""The photo edit: layer -> crop -> (cached) PTI inversion -> drag -> motion warp -> patch."""
