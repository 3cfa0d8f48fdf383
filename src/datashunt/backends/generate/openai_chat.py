"""Any OpenAI-compatible chat endpoint generating text, with the log-probability of each token it chose."""

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval

from ...exceptions import LargeModelError
from ..openai_chat import DEFAULT_URL, OpenAIEndpoint
from .base import GENERATOR_CONSTRAINTS, Generated, Generator, cut_at_stop


class OpenAIChatGenerator(OpenAIEndpoint, Generator):
    """A chat model behind an OpenAI-compatible HTTP API (OpenAI, vLLM, a llama.cpp server,
    Ollama), asked greedily (temperature 0) with ``logprobs=true``: the sequence confidence comes
    from the endpoint's own token log-probabilities. An endpoint that gives none still answers;
    its texts are flagged and routed on (their confidence is unknown).

    Parameters
    ----------
    model, base_url, api_key_env, timeout, max_retries, max_concurrency
        As for :class:`~datashunt.backends.openai_chat.OpenAIChatModel`: the key is read from the
        environment when the first call is made and never stored, cached, logged or reported.
    instruction, template, max_new_tokens, stop, shots, price, cache
        See :class:`~datashunt.backends.generate.base.Generator`.

    Examples
    --------
    >>> OpenAIChatGenerator("gpt-4o-mini", instruction="Caption this image.").describe()
    "model 'gpt-4o-mini' at https://api.openai.com/v1 (OpenAI-compatible HTTP), API key from $OPENAI_API_KEY"
    """

    modalities = ("text", "image")  # images go as image_url parts, for vision models
    location_params = ("model", "base_url", "api_key_env")
    _progress_name = "generator"
    _parameter_constraints = {
        "model": [str],
        "base_url": [str, None],
        "api_key_env": [str],
        "timeout": [Interval(Real, 0, 3600, closed="right")],
        "max_retries": [Interval(Integral, 0, 20, closed="both")],
        "max_concurrency": [Interval(Integral, 1, 1024, closed="both")],
        **GENERATOR_CONSTRAINTS,
    }

    def __init__(
        self,
        model,
        *,
        base_url=None,
        api_key_env="OPENAI_API_KEY",
        timeout=60.0,
        max_retries=2,
        max_concurrency=8,
        instruction="",
        template=None,
        max_new_tokens=256,
        stop=None,
        shots=0,
        price=None,
        cache=True,
    ):
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.instruction = instruction
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.stop = stop
        self.shots = shots
        self.price = price
        self.cache = cache

    def describe(self) -> str:
        return (
            f"model {self.model!r} at {self.base_url or DEFAULT_URL} (OpenAI-compatible HTTP), "
            f"API key from ${self.api_key_env}"
        )

    def identity(self) -> str:
        return f"openai_generate:{self.base_url or DEFAULT_URL}:{self.model}"

    def _generate_many(self, todo, progress):
        return self._run_all(todo, progress)

    def _request(self, messages):
        request = dict(
            model=self.model, messages=messages, max_tokens=self.max_new_tokens, temperature=0.0, logprobs=True
        )
        if self.stop:
            request["stop"] = list(self.stop)
        return request

    def _parse(self, response, call) -> Generated:
        tokens = self._usage(response)
        choice = response.choices[0]
        content = getattr(getattr(choice, "message", None), "content", None)
        if not isinstance(content, str):
            raise LargeModelError(f"the endpoint returned no text for model {self.model!r}")
        text, _ = cut_at_stop(content, self.stop)  # servers that ignore `stop` are held to it here
        try:
            logprobs = [float(t.logprob) for t in choice.logprobs.content]
        except (AttributeError, TypeError, ValueError):
            logprobs = None  # flagged by the base class; the text still counts
        return Generated(text.strip(), logprobs or None, *tokens)
