"""ai-how's LLM serving engines behind one async interface (``AsyncLLM``).

``ours`` is the continuous-batching engine (core.py, CUDA graphs + a Triton ragged attention kernel
on GPU, the same code eagerly on CPU); ``naive`` runs one ``generate`` per request, as KServe's
huggingfaceserver does without vLLM; ``transformers`` is transformers' own continuous batching.
All three answer through the same front end, so the server, its metrics and ``ai-how bench``
never know which one runs.
"""
