"""Offline stand-ins for the managed fine-tuning providers, for the real SDKs to talk to.

- ``FakeOpenAI``: loopback HTTP fake of OpenAI files + fine-tuning (``openai`` SDK, ``base_url=fake.base_url``)
- ``FakeTogether``: loopback HTTP fake of Together files + fine-tunes (``together`` SDK)
- ``FakeFireworks``: loopback HTTP fake of Fireworks datasets + supervised fine-tuning jobs (``fireworks-ai`` SDK)
- ``FakeVertex``: loopback HTTP fake of Vertex AI tuning jobs, Cloud Storage uploads and Google's token endpoint
  (``google-genai`` SDK, ``google-auth``)
- ``BedrockHarness``: moto's Bedrock + S3, with the job transitions moto lacks
- ``FakeAnthropic``: loopback HTTP fake of Anthropic's Messages API (``anthropic`` SDK; also Claude on Bedrock)
- ``FakeBedrockServing``: loopback fake of Bedrock Provisioned Throughput and Converse (``boto3``, endpoint_url)
- ``Fault`` / ``Outcome``: what goes wrong with a call, and how a job ends
- ``harnesses.PROVIDERS``: one record per managed provider (its stand-in, credentials, models, route, options),
  which every suite that runs a managed backend reads
- ``nvidia_smi``: a stand-in ``nvidia-smi`` on PATH, this machine's GPUs as a test says (conftest's ``nvidia_smi``)
"""

from ._jobs import Outcome
from ._server import ALL_FAULTS, Fault
from .anthropic_fake import FakeAnthropic
from .bedrock_fake import BedrockHarness
from .bedrock_serving import FakeBedrockServing
from .fireworks_fake import FakeFireworks
from .openai_fake import FakeOpenAI
from .together_fake import FakeTogether
from .vertex_fake import FakeVertex

__all__ = ["ALL_FAULTS", "BedrockHarness", "FakeAnthropic", "FakeBedrockServing", "FakeFireworks", "FakeOpenAI",
           "FakeTogether", "FakeVertex", "Fault", "Outcome"]
