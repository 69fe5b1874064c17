"""Locust load tests for the toolkit's Triton ensembles, over gRPC and HTTP.

    locust -f load_tests/locustfile.py --headless -u 4 -r 4 -t 30s --stop-timeout 10 \
        --precision int8 --batch-size 8 --csv results/load/run --html results/load/report.html

docs/load_tests.md has the scenarios, load shapes, SLA options and distributed runs; every
option also reads an environment variable (`--help` lists them under "Triton scenario").

One request is one batch: `--batch-size` encoded images of the image set, zero-padded, sent as the
ensemble's IMAGE input (contract/layout.py). Each request fires one Locust request event named
`<protocol> <ensemble> b<batch>` (e.g. `grpc digits_int8 b8`) with its response time, response size
and, when it fails, an exception saying what failed and on which images; nothing is retried or
swallowed, so Locust's failure count is the number of failed requests.
"""
from __future__ import annotations

# gRPC's C core blocks the whole process in a call unless it is switched to gevent's event loop.
# Without this, users take turns (requests never overlap) and nothing reports an error, so the
# load is silently wrong. It must run before any gRPC channel exists; Locust has
# already monkey-patched the standard library when it imports this file, as init_gevent requires.
from grpc.experimental import gevent as _grpc_gevent

_grpc_gevent.init_gevent()

import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import weakref  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from locust import LoadTestShape, User, events, task  # noqa: E402
from locust import stats as locust_stats  # noqa: E402
from locust.runners import MasterRunner, WorkerRunner  # noqa: E402

from clients.sender import Sender  # noqa: E402
from contract import layout  # noqa: E402
from contract.errors import ToolkitError  # noqa: E402
from load_tests import scenario as _scenario  # noqa: E402
from load_tests import sla as _sla  # noqa: E402
from load_tests.shapes import plan  # noqa: E402

log = logging.getLogger("load_tests")

# Filled in by the init event (per process); users read it.
STATE: dict = {"scenario": None, "request_log": None}
# gRPC clients not yet closed; closed at the end of the run if a user never got to on_stop.
_open_grpc_clients: "weakref.WeakSet" = weakref.WeakSet()
_user_ids = itertools.count()


class TritonRequestError(ToolkitError):
    """A failed request, in words: which request, what the server or transport said."""


# --- options and set-up -----------------------------------------------------------------------------

@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    _scenario.add_arguments(parser)


@events.init.add_listener
def _on_init(environment, runner=None, **_kw):
    opts = environment.parsed_options
    if opts is None:          # Environment built by a library user without a command line
        return
    if opts.load_shape == "constant":
        # Locust's own -u/-r/-t (and web UI) handling is the constant shape; see shapes.py.
        environment.shape_class = None
    if opts.protocol != "both":
        keep = [c for c in environment.user_classes if getattr(c, "protocol", None) == opts.protocol]
        if not keep:
            log.error("--protocol %s: none of the selected user classes (%s) speaks it", opts.protocol,
                      ", ".join(c.__name__ for c in environment.user_classes))
            sys.exit(2)
        environment.user_classes[:] = keep
    if not environment.stop_timeout:
        # Locust's default (0) kills users mid-request when the run ends: the server has then
        # counted requests that Locust never records. Letting the current request finish keeps the
        # two in agreement and costs at most one request's latency. --stop-timeout overrides it.
        environment.stop_timeout = opts.request_timeout
    if isinstance(runner, MasterRunner):
        return                 # the master sends no requests; workers load their own scenario
    try:
        sc = _scenario.Scenario.from_options(opts)
        _preflight(sc, environment)
    except Exception as err:  # noqa: BLE001 - a scenario that cannot run stops here, in words
        hint = (" (the load test's addresses: --http-url / --grpc-url, or TRITON_HTTP_URL / TRITON_GRPC_URL)"
                if "--url" in str(err) else "")
        log.error("cannot start the load test: %s%s", err, hint)
        sys.exit(2)
    STATE["scenario"] = sc
    log.info("scenario: %s", sc.describe())
    if opts.request_log:
        path = Path(opts.request_log)
        if isinstance(runner, WorkerRunner):
            path = path.with_name(f"{path.name}.{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        STATE["request_log"] = open(path, "a", buffering=1)  # line-buffered: readable while running


def _preflight(sc: _scenario.Scenario, environment) -> None:
    """Fail fast, with the client library's wording, on what would otherwise fail every request:
    no server, an unknown or unready ensemble, a batch above max_batch_size."""
    from clients.triton import TritonClient

    protocols = {getattr(c, "protocol", "http") for c in environment.user_classes}
    protocol = "http" if "http" in protocols else "grpc"
    client = TritonClient(sc.urls[protocol], protocol, timeout_s=min(sc.timeout_s, 30.0))
    try:
        client.wait_until_ready()
        for ens in sc.ensembles.values():
            info = client.model_info(ens)
            too_big = [b for b in sc.batch_sizes if info.max_batch_size and b > info.max_batch_size]
            if too_big:
                raise ValueError(f"--batch-size {too_big} exceeds {ens}'s max_batch_size {info.max_batch_size}")
            sc.num_classes[ens] = info.num_classes
    finally:
        client.close()
        if protocol == "grpc":
            _retire(client._client)


def _retire(grpc_client) -> None:
    """Make a closed tritonclient gRPC client's close() a no-op.

    tritonclient closes its channel again in __del__. Under gevent, a channel close run by the garbage
    collector at interpreter exit (the gevent hub no longer running) was seen to hang Locust's exit
    for good, inside grpc's gevent_decrement_channel_count. Every gRPC client here is closed while
    the hub runs (on_stop, or just above), and then never again."""
    grpc_client.close = lambda *a, **k: None


@events.quitting.add_listener
def _check_sla(environment, **_kw):
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return   # a worker's statistics are a share; the master (or local runner) judges the whole run
    opts = environment.parsed_options
    if opts.csv_prefix:
        # Locust's CSV writer rewrites <prefix>_stats.csv once a second and never once more at the end,
        # so the file can miss the last second's requests (locustio/locust#1806, #2299). Yielding for
        # one interval lets it write the final numbers before Locust closes the files.
        gevent.sleep(locust_stats.CSV_STATS_INTERVAL_SEC + 0.25)
    checks = _sla.evaluate_stats(environment.stats, opts)
    for c in checks:
        (log.info if c.passed else log.error)(c.line())
    failed = [c for c in checks if not c.passed]
    if failed:
        log.error("SLA failed: %s", ", ".join(c.name for c in failed))
        environment.process_exit_code = _sla.SLA_FAILED_EXIT_CODE
    elif not environment.runner.exceptions:
        # Passed: the SLA decides, not Locust's "any failure exits 1" (the failure ratio allowed some).
        # Errors in the load test's own code (runner.exceptions) still fail the run, as Locust decides.
        environment.process_exit_code = 0
    if opts.csv_prefix:
        _sla.write_report(Path(f"{opts.csv_prefix}_sla.json"), checks)
    _close_leftovers()


@events.quit.add_listener
def _on_quit(**_kw):
    _close_leftovers()   # workers do not get `quitting` with statistics to judge, but need this too


def _close_leftovers() -> None:
    for c in list(_open_grpc_clients):
        c.close()
        _retire(c)
    if STATE["request_log"]:
        STATE["request_log"].close()
        STATE["request_log"] = None


# --- users ------------------------------------------------------------------------------------------

class TritonUser(User):
    """Sends one batch per task to one ensemble, back to back (or with --think-time between)."""

    abstract = True
    protocol = ""

    def wait_time(self):
        return STATE["scenario"].think_s()

    def on_start(self):
        sc = STATE["scenario"]
        self.uid = next(_user_ids)
        # Users of a process are spread over the precision x batch-size combinations.
        self.model, self.batch_size = sc.combos[self.uid % len(sc.combos)]
        self.pool = sc.pools[self.batch_size]
        self.k = self.uid                      # users start at different batches of the pool
        self.name = f"{self.protocol} {self.model} b{self.batch_size}"
        self.num_classes = sc.num_classes.get(self.model, 0)
        self.timeout_s = sc.timeout_s
        self.url = sc.urls[self.protocol]
        # One client (connection) per user, as real independent callers have; built once, so a
        # request pays only for sending.
        self.client = self.make_client()
        # Inputs are built once per batch and reused; tritonclient only reads them.
        self.inputs = [[self.client.input(layout.ENSEMBLE_INPUT, b.array)] for b in self.pool]
        self.outputs = [self.client.output(layout.ENSEMBLE_OUTPUT)]

    def on_stop(self):
        self.client.close()
        if self.protocol == "grpc":
            _retire(self.client.client)
            _open_grpc_clients.discard(self.client.client)

    @task
    def infer(self):
        i = self.k % len(self.pool)
        self.k += 1
        batch = self.pool[i]
        exc = None
        length = 0
        wall_start = time.time()
        start = time.perf_counter()
        try:
            result = self.client.infer(self.model, self.inputs[i], self.outputs)
            length = self.check(result, batch)
        except Exception as err:  # noqa: BLE001 - becomes the request's failure, never dropped
            exc = self.describe(err, batch)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        self.environment.events.request.fire(
            request_type=self.protocol, name=self.name, response_time=elapsed_ms, response_length=length,
            exception=exc, context={"user": self.uid})
        if STATE["request_log"]:
            STATE["request_log"].write(f"{wall_start:.6f},{wall_start + elapsed_ms / 1000.0:.6f},{self.protocol},"
                                       f"{os.getpid()}-{self.uid},{self.name},{int(exc is None)}\n")

    def check(self, result, batch) -> int:
        """The response really holds logits for every image of the batch; returns its size in bytes."""
        logits = result.as_numpy(layout.ENSEMBLE_OUTPUT)
        n = batch.array.shape[0]
        if logits is None:
            raise TritonRequestError(f"the response has no output {layout.ENSEMBLE_OUTPUT!r}")
        if logits.ndim != 2 or logits.shape[0] != n or (self.num_classes and logits.shape[1] != self.num_classes):
            raise TritonRequestError(f"{layout.ENSEMBLE_OUTPUT} has shape {list(logits.shape)}, expected "
                                     f"[{n}, {self.num_classes or 'classes'}]")
        return self.response_bytes(result, logits)

    def describe(self, err: BaseException, batch) -> TritonRequestError:
        from clients.errors import is_connection_error, is_timeout, message

        if isinstance(err, TritonRequestError):
            text = str(err)
        elif is_timeout(err):
            text = f"no answer within {self.timeout_s:g} s (--request-timeout); server overloaded or stuck?"
        elif is_connection_error(err):
            text = f"cannot reach the server at {self.url}: {message(err)}"
        else:
            text = message(err)
        shown = ", ".join(batch.files[:3]) + (f" (+{len(batch.files) - 3} more)" if len(batch.files) > 3 else "")
        # Locust groups failures by this text, so equal causes on equal batches count together.
        return TritonRequestError(f"{self.model} over {self.protocol}, batch {len(batch.files)} [{shown}]: {text}")


class TritonGrpcUser(TritonUser):
    protocol = "grpc"

    def make_client(self):
        client = Sender(self.url, "grpc", timeout_s=self.timeout_s)
        _open_grpc_clients.add(client.client)
        return client

    def response_bytes(self, result, logits) -> int:
        return result.get_response().ByteSize()


class TritonHttpUser(TritonUser):
    protocol = "http"

    def make_client(self):
        # One connection, one request at a time, like a gRPC user's channel (clients.sender).
        return Sender(self.url, "http", timeout_s=self.timeout_s)

    def response_bytes(self, result, logits) -> int:
        # The body is a JSON header plus the binary logits; tritonclient keeps no byte count, so the
        # header is re-encoded (same size up to whitespace).
        header = len(json.dumps(result.get_response(), separators=(",", ":")))
        return header + len(getattr(result, "_buffer", b"") or b"")


class TritonLoadShape(LoadTestShape):
    """The shape --load-shape names; -u is the peak user count, -r the ramp rate, -t the length."""

    # Read -u/-r/-t instead of having Locust warn that a shape ignores them.
    use_common_options = True

    def tick(self):
        o = self.runner.environment.parsed_options
        return plan(o.load_shape, self.get_run_time(), users=o.num_users or 1, spawn_rate=o.spawn_rate or 1,
                    run_time=o.run_time or None, step_users=o.step_users, step_time=o.step_time,
                    spike_base=o.spike_base, spike_at=o.spike_at, spike_duration=o.spike_duration)
