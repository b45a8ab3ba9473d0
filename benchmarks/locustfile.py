"""Load test of the Colorizer gRPC API: real sketches, random hints, every variant the server lists.

With the service running (``make run``, gateway on 127.0.0.1:50051), from the repository root:

    locust -f benchmarks/locustfile.py --headless --host 127.0.0.1:50051 -u 16 -r 4 -t 30s \\
        --csv results/locust/run --html results/locust/report.html

The users ramp up in steps (`StepRamp`): 1, 2, 4, ... up to ``-u`` users over ``-t``, each step an
equal share of the run, so one run shows how latency grows with load (``--csv-full-history``
keeps the per-step numbers). Each user is a closed loop: one request in flight at a time.
Sketches are the OpenMoji test split if ``data/openmoji-17.0.0-128.npz`` is prepared, else
synthetic ones (``--sketches synthetic`` forces those). A request carries 0-20 point hints for
variants that take HINT_KIND_POINTS and the colour image for those that take
HINT_KIND_COLOR_IMAGE.
"""

from __future__ import annotations

import numpy as np
from locust import LoadTestShape, constant, events, task

from benchmarks.grpc_user import GrpcUser  # importing it patches grpc for gevent
from benchmarks.workload import Sample, colorize_request, make_samples, random_hints
from service.api import pb, pb_grpc

SAMPLES: list[Sample] = []
STREAM_LENGTH = 4  # requests per ColorizeStream call


@events.init_command_line_parser.add_listener
def _arguments(parser) -> None:
    parser.add_argument(
        "--sketches",
        choices=("auto", "openmoji", "synthetic"),
        default="auto",
        help="sketches to send (auto: the OpenMoji test split when prepared)",
    )
    parser.add_argument("--samples", type=int, default=128, help="distinct sketches to cycle through")


@events.init.add_listener
def _load_sketches(environment, **_kwargs) -> None:
    options = environment.parsed_options
    SAMPLES[:] = make_samples(options.sketches if options else "auto", options.samples if options else 128)


class ColorizerUser(GrpcUser):
    host = "127.0.0.1:50051"
    stub_class = pb_grpc.ColorizerStub
    wait_time = constant(0)

    def on_start(self) -> None:
        listed = self.stub.ListVariants(pb.ListVariantsRequest(), timeout=10)
        self.variants = [v for v in listed.variants if v.ready] or list(listed.variants)
        self.rng = np.random.default_rng()

    def request_name(self, method: str, request) -> str:
        variant = getattr(request, "variant", "")
        return f"{method} [{variant}]" if variant else method

    def _request(self, index: int = 0) -> pb.ColorizeRequest:
        """A random sketch for a random variant, with fresh 0-20 hints (or the colour image) as it takes."""
        sample = SAMPLES[self.rng.integers(len(SAMPLES))]
        variant = self.variants[self.rng.integers(len(self.variants))]
        points = random_hints(sample.color, self.rng)
        return colorize_request(sample, variant.name, list(variant.accepted_hints), points, request_id=str(index))

    @task(8)
    def colorize(self) -> None:
        self.stub.Colorize(self._request(), timeout=60)

    @task(1)
    def colorize_stream(self) -> None:
        for _ in self.stub.ColorizeStream(iter([self._request(i) for i in range(STREAM_LENGTH)]), timeout=120):
            pass

    @task(1)
    def list_variants(self) -> None:
        self.stub.ListVariants(pb.ListVariantsRequest(), timeout=10)


class StepRamp(LoadTestShape):
    """Users double every step, 1, 2, 4, ... up to --users (default 16), over --run-time (default 60 s)."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options
        users = (options.num_users if options else None) or 16
        run_time = (options.run_time if options else None) or 60
        spawn_rate = (options.spawn_rate if options else None) or users
        steps = [1 << i for i in range(users.bit_length()) if 1 << i < users] + [users]
        t = self.get_run_time()
        if t >= run_time:
            return None
        return steps[min(int(t / run_time * len(steps)), len(steps) - 1)], spawn_rate
