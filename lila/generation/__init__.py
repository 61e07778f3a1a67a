"""Generation: choosing each next token (sampling), knowing when to stop (stops), and the
token loop over a model's KV cache (session)."""
from lila.generation.sampling import Sampler, SamplingParams
from lila.generation.stops import StopMatcher

__all__ = ["Sampler", "SamplingParams", "StopMatcher"]
