"""The steps of ``edgeops demo`` (run.py holds the run/teardown frame, parts.py what both share).

Each step narrates one line; every wait is bounded by the demo's one deadline (``Clock``), so a loop that
does not close ends with the name of the step it was waiting for.
"""

import os
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from edge_agent.protocol import Topics
from edgeops.demo import prefect_api as pf
from edgeops.demo.parts import (
    LABELS,
    MODEL,
    ROLLOUT_POLICY,
    TARGET,
    Clock,
    DemoOptions,
    DemoResult,
    Say,
    agent_argv,
    agent_config,
    new_prefix,
    samples_stored,
    shifted,
    start_broker,
    utc_now,
    write_project,
)
from edgeops.errors import EdgeopsError
from edgeops.stack import services as svc
from edgeops.stack.supervisor import Child, ServiceError, Supervisor, free_port

SERVER_START_S = 120.0


class DemoLoop:
    def __init__(self, options: DemoOptions, work: Path, clock: Clock, supervisor: Supervisor, result: DemoResult,
                 log: Say) -> None:
        self.o, self.work, self.clock, self.sup, self.result, self.log = options, work, clock, supervisor, result, log
        self.db_url = f"sqlite:///{work / 'telemetry.db'}"
        self.ports: dict[str, int] = {}
        self.agents: list[Child] = []
        self.traffic: Any = None
        self.view: pf.PrefectView | None = None
        self.settings: Any = None
        self.external_broker = False
        self.shift_at = utc_now()
        self.prefix = "edgeops"
        self.api_url = ""
        self.config = work / "edgeops.yaml"

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self) -> None:
        env = self.start_services()
        self.release_v1()
        deployments = self.serve(env)
        self.baseline(deployments["demo-monitor"])
        event = self.shift_until_drift(deployments["demo-monitor"])
        self.retrain(deployments["demo-retrain"], event)

    def start_services(self) -> dict[str, str]:
        """Broker first (seconds), then the Prefect server is spawned and, while it boots, v1 is trained and the
        agents start; the ingest needs the server (it emits events)."""
        self.start_broker()
        server, env = self.spawn_prefect()
        self.config = write_project(self.work, self.result.broker_url, self.prefix)
        self.train_v1()
        self.spawn_agents(env)
        if server is not None:
            self.log("starting Prefect server ...")
            self.sup.wait_until(server, lambda: svc.api_healthy(self.api_url), min(SERVER_START_S, self._left()),
                                "healthy Prefect API")
            self.log(f"Prefect server up: UI {self.result.prefect_ui}")
        else:
            self.log(f"Prefect: PREFECT_API_URL {self.api_url}")
        self.clock.mark("services_up")
        self.start_ingest(env)
        return env

    def start_broker(self) -> None:
        broker, self.external_broker = start_broker(self.sup, self.work)
        self.result.broker_url = broker
        if self.external_broker:
            from edgeops.mqtt import ControlClient

            ControlClient(broker).connect().close()  # an unreachable EDGEOPS_MQTT_URL fails here, in one line
        self.prefix = new_prefix(self.external_broker)
        self.log(f"broker: {broker} ({'EDGEOPS_MQTT_URL' if self.external_broker else 'own Mosquitto'}), "
                 f"topic prefix {self.prefix}")

    def spawn_prefect(self) -> tuple[Child | None, dict[str, str]]:
        """$PREFECT_API_URL when set (checked now), else our own server (spawned, not yet waited for); and the
        environment of every child: that API, the broker, and the ``flows`` package importable."""
        api_url = os.environ.get("PREFECT_API_URL")
        server: Child | None = None
        home: Path | None = None
        if api_url:
            if not svc.api_healthy(api_url):
                raise ServiceError(f"PREFECT_API_URL {api_url} does not answer (unset it to let the demo start "
                                   "its own Prefect server)")
        else:
            home = self.work / "prefect"
            server, api_url = svc.spawn_server(self.sup, home, os.environ)
        env = svc.client_env(os.environ, api_url, self.result.broker_url, home)
        self.result.prefect_ui = svc.ui_url(api_url)
        self.api_url = api_url
        return server, env

    def spawn_agents(self, env: dict[str, str]) -> None:
        o = self.o
        public_key = self.work / ".edgeops" / "keys" / "release.pub"
        for i in range(1, o.agents + 1):
            device, port = f"demo-edge-{i}", free_port()
            config = agent_config(self.work / "agents" / device, device, self.result.broker_url, self.prefix,
                                  public_key, port, o.telemetry_interval_s)
            self.agents.append(self.sup.spawn(f"agent-{device}", agent_argv(config), env=env))
            self.ports[device] = port
        self.log(f"started {o.agents} edge agents (edgeops-agent run; HTTP on ports "
                 f"{', '.join(map(str, self.ports.values()))}; telemetry every {o.telemetry_interval_s:g} s)")

    def start_ingest(self, env: dict[str, str]) -> None:
        ready = self.work / "ingest.ready"
        ingest = svc.spawn_ingest(self.sup, env, db_url=self.db_url, broker_url=self.result.broker_url,
                                  prefix=self.prefix, ready_file=ready, config=self.config, flush_ms=100)
        self.sup.wait_until(ingest, lambda: svc.ingest_subscribed(ready, ingest.pid), self._left(),
                            "ingest subscription")
        self.log(f"telemetry ingest running (edgeops telemetry serve → {self.work / 'telemetry.db'})")

    def train_v1(self) -> None:
        from edgeops.release.signing import generate_keys
        from edgeops.train.pipeline import make_request, run_pipeline
        from edgeops.train.samples import make_sample

        generate_keys(self.work / ".edgeops" / "keys")
        data = self.work / "sample" / "churn.csv"
        data.parent.mkdir(parents=True, exist_ok=True)
        make_sample("binary", self.o.rows, seed=0).to_csv(data, index=False)
        result = run_pipeline(make_request(data, MODEL, TARGET, self.config))
        if not result.passed:
            raise EdgeopsError(f"the first release did not pass its gates: {result.record.status}")
        metrics = result.record.manifest.metrics
        self.result.version_before = result.record.version
        self.log(f"trained {MODEL}@{result.record.version} on {self.o.rows} sample rows: accuracy "
                 f"{metrics.get('accuracy', 0):.3f}, ONNX parity checked, signed, champion")

    def release_v1(self) -> None:
        from edgeops.config import load_config
        from edgeops.mqtt import ControlClient
        from edgeops.release.publish import publish_release
        from edgeops.release.registry import Registry
        from edgeops.retrain.steps import policy_from_json, project_public_key, rollout_store
        from edgeops.rollout.controller import RolloutController, start_rollout
        from edgeops.rollout.fleet import read_fleet
        from edgeops.rollout.signer import desired_signer

        cfg = load_config(self.config)
        record = Registry.from_config(cfg.registry).get(MODEL, 1)
        topics = Topics(self.prefix)
        with ControlClient(self.result.broker_url) as client:
            def online() -> bool:
                self._check_alive()
                devices = read_fleet(client, topics).devices
                return sum(d.online is True for d in devices) >= self.o.agents
            self.clock.wait("the agents to come online", online)
            self.log(f"{self.o.agents} agents online, no model yet")
            publish_release(client, topics, record.manifest, record.onnx_bytes(), status=record.status,
                            public_key=project_public_key(cfg))
            store = rollout_store(cfg)
            rollout = start_rollout(store, client, topics, model=MODEL, version=1, selector=LABELS,
                                    policy=policy_from_json(ROLLOUT_POLICY))
            final = RolloutController(store, client, topics, signer=desired_signer(cfg)).run(rollout.id)
        if final.status != "completed":
            raise EdgeopsError(f"rollout of {MODEL}@1 {final.status}: {final.reason}")
        self.clock.mark("v1_everywhere")
        self.log(f"rolled out {MODEL}@1 to {len(final.devices)} agents (canary, then the rest): all serving v1")

    def serve(self, env: dict[str, str]) -> dict[str, UUID]:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        spec = {"monitor": {"db": self.db_url, "model": MODEL, "hours": 1.0,
                            "registry_root": str(self.work / ".edgeops" / "registry")},
                "retrain": {"model": MODEL, "data": str(self.work / "data"), "config_path": str(self.config),
                            "policy": ROLLOUT_POLICY, "broker_url": self.result.broker_url, "prefix": self.prefix}}
        serving = svc.spawn_serving(self.sup, env, "edgeops.flows.serve_demo", spec, svc.package_root())
        self.settings = temporary_settings({PREFECT_API_URL: self.api_url})
        self.settings.__enter__()
        self.view = pf.PrefectView(self.api_url)
        self.log("serving deployments demo-monitor and demo-retrain (trigger: edgeops.drift.detected) ...")
        self._start_traffic()
        ids = pf.wait_served(self.view, serving, self.sup, ["monitor/demo-monitor", "edgeops-retrain/demo-retrain"],
                             self._left())
        self.clock.mark("deployments_served")
        self.log("deployments served; the retrain trigger is an automation on the server")
        return {name.split("/")[1]: deployment for name, deployment in ids.items()}

    def _start_traffic(self) -> None:
        from edgeops.demo.traffic import TrafficDriver, records_of
        from edgeops.train.samples import make_sample

        rows = make_sample("binary", 3000, seed=10)
        self.traffic = TrafficDriver(self.ports, records_of(rows.to_dict("records"), drop=[TARGET])).start()
        self.log("traffic: 20-row batches, 5 per second to every agent's POST /v1/predict (sample rows)")

    def baseline(self, monitor: UUID) -> None:
        need = self.o.baseline_samples
        self.clock.wait(f"{need} predictions of v1 in the telemetry store", lambda: self._stored(need))
        scopes = self.monitor_once(monitor)
        verdict = next((s for s in scopes if s.release == f"{MODEL}@1"), None)
        self.clock.mark("baseline_checked")
        self.log(f"monitor on unshifted traffic: {MODEL}@1 fleet verdict "
                 f"{verdict.verdict if verdict else 'missing'}")
        if verdict is not None and verdict.verdict == "drift":  # the trigger's cooldown would swallow the real one
            raise EdgeopsError(f"the monitor saw drift before the shift ({', '.join(verdict.drifted)}); run again")

    def monitor_once(self, monitor: UUID) -> list[pf.ScopeVerdict]:
        assert self.view is not None
        run_id = self.view.start_run(monitor)
        state, message = pf.wait_final(self.view, run_id, self.clock.deadline)
        self.clock.check("a monitor run to finish")
        if state != "Completed":
            raise EdgeopsError(f"monitor run {self.view.run_name(run_id)} ended {state}: {message}")
        return pf.parse_drift_report(self.view.artifact_markdown(run_id, pf.DRIFT_REPORT_KEY) or "")

    def shift_until_drift(self, monitor: UUID) -> dict[str, Any]:
        from edgeops.demo.traffic import records_of
        from edgeops.train.samples import make_sample

        assert self.view is not None
        feature, factor = self.o.shift_feature, self.o.shift_factor
        since = self.shift_at = utc_now()
        newest = self.work / "data" / "extract-shifted.csv"
        newest.parent.mkdir(parents=True, exist_ok=True)
        shifted(make_sample("binary", self.o.rows, seed=1), feature, factor).to_csv(newest, index=False)
        before = samples_stored(self.db_url, 1)
        self.traffic.use(records_of(shifted(make_sample("binary", 3000, seed=11), feature, factor)
                                    .to_dict("records"), drop=[TARGET]))
        self.clock.mark("shifted")
        self.log(f"SHIFT: traffic now has '{feature}' × {factor:g}; the newest training extract ({newest.name}) "
                 "has it too")
        self.clock.wait("shifted predictions in the telemetry store", lambda: self._stored(before + 600))
        while True:
            scopes = self.monitor_once(monitor)
            verdict = next((s for s in scopes if s.release == f"{MODEL}@1"), None)
            if verdict is not None and verdict.verdict == "drift":
                self.result.drift_report = [r for r in verdict.rows if r.startswith(f"| {feature} |")]
                self.log(f"monitor: DRIFT on {MODEL}@1 in {', '.join(verdict.drifted)}")
                break
            self.log(f"monitor: {verdict.verdict if verdict else 'no verdict'} yet; running it again")
        event = self.clock.wait("the edgeops.drift.detected event", lambda: next(
            iter(self.view.drift_events(MODEL, since) if self.view else []), None), poll_s=1.0)
        payload = event.get("payload", {})
        self.result.drift = payload
        drifted = [f for f in payload.get("drifted", []) if f != "__prediction__"]
        self.result.drift_feature = feature if feature in drifted else (drifted[0] if drifted else None)
        self.clock.mark("drift_event")
        self.log(f"event edgeops.drift.detected about edgeops.model.{MODEL}: drifted {payload.get('drifted')}, "
                 f"PSI {payload.get('psi', {}).get(feature)}")
        return event

    def retrain(self, deployment: UUID, event: dict[str, Any]) -> None:
        from edgeops.config import load_config
        from edgeops.mqtt import ControlClient
        from edgeops.release.registry import Registry
        from edgeops.rollout.fleet import read_fleet

        assert self.view is not None
        view = self.view
        run = self.clock.wait("the trigger to start a retrain run",
                              lambda: next(iter(view.runs_of(deployment, self.shift_at)), None), poll_s=0.5)
        self.result.retrain_run = run.name
        self.clock.mark("retrain_started")
        self.log(f"trigger fired: retrain run '{run.name}' (event {event.get('id')})")
        seen: dict[str, str] = {}
        topics = Topics(self.prefix)
        with ControlClient(self.result.broker_url) as client:
            while True:
                for d in read_fleet(client, topics).devices:
                    text = f"{d.release} {d.state}"
                    if seen.get(d.device) != text:
                        if d.device in seen:
                            self.log(f"  {d.device}: {text}")
                        seen[d.device] = text
                state, message, final = view.run_state(run.id)
                if final:
                    break
                self._check_alive()
                self.clock.check(f"retrain run '{run.name}' to finish (state {state})")
                time.sleep(0.5)
            if state != "Completed":
                raise EdgeopsError(f"retrain run '{run.name}' ended {state}: {message}")
            self.log(f"retrain run '{run.name}': {message}")
            champion = Registry.from_config(load_config(self.config).registry).champion(MODEL)
            self.result.champion = None if champion is None else champion.version
            if champion is None or champion.version == self.result.version_before:
                raise EdgeopsError(f"retrain run '{run.name}' made no new champion: {message}")
            self.result.version_after = self.result.champion

            def all_on_champion() -> bool:
                devices = {d.device: d for d in read_fleet(client, topics).devices}
                self.result.devices = {name: devices[name].version if name in devices else None
                                       for name in self.ports}
                return bool(champion) and all(v == champion.version for v in self.result.devices.values())
            self.clock.wait(f"every agent to report {MODEL}@{self.result.champion}", all_on_champion)
        self.clock.mark("loop_closed")
        self.log(f"loop closed: {MODEL}@{self.result.version_before} → @{self.result.version_after} on "
                 f"{len(self.result.devices)}/{len(self.ports)} agents; champion {MODEL}@{self.result.champion}")

    # -- helpers and teardown -----------------------------------------------------------------------------
    def _left(self) -> float:
        return max(1.0, self.clock.deadline - time.monotonic())

    def _stored(self, predictions: int) -> bool:
        """Whether the store holds that many predictions of v1 (and every child still runs)."""
        self._check_alive()
        return samples_stored(self.db_url, 1) >= predictions

    def _check_alive(self) -> None:
        dead = self.sup.dead()
        if dead:
            child = dead[0]
            raise ServiceError(f"{child.name} exited (code {child.proc.returncode}); log {child.log}: "
                               f"{child.log_tail(3)}")

    def teardown(self) -> None:
        """Stop traffic and close the API client (the processes are the supervisor's to stop)."""
        if self.traffic is not None:
            self.traffic.stop()
            self.traffic = None
        if self.view is not None:
            self.view.close()
            self.view = None
        if self.settings is not None:
            self.settings.__exit__(None, None, None)
            self.settings = None

    def clean_broker(self) -> None:
        """On a shared broker, remove the demo's retained messages (after the agents stopped publishing)."""
        if self.external_broker:
            from edgeops.mqtt import ControlClient

            try:
                with ControlClient(self.result.broker_url) as client:
                    client.publish_many((t, b"", True) for t in client.collect_retained(f"{self.prefix}/#"))
            except EdgeopsError as exc:
                self.log(f"could not clear the demo's retained messages under {self.prefix}/: {exc}")
