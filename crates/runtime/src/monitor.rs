//! The performance monitor: samples every service once per interval, learns each signal's baseline,
//! journals anomalies with their evidence and carries out the configured action, classifies crash
//! loops, and drives the autoscaler.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use crate::anomaly::ActiveAnomaly;
use crate::anomaly::{AnomalyAction, Change, CrashLoop, Detector, DetectorPolicy, Evidence};
use crate::autoscale::{Autoscaler, Decision, Observation};
use crate::bus::HistogramSnapshot;
use crate::client::Client;
use crate::event::{Cause, Event};
use crate::supervisor::Mark;
use crate::{ServiceName, Snapshot};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Signal {
    LatencyP90,
    ErrorRate,
    QueueDepth,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::LatencyP90 => "latency_p90_ms",
            Signal::ErrorRate => "error_rate",
            Signal::QueueDepth => "queue_depth",
        }
    }

    /// Floors that keep signals near zero from flagging noise: 0.1 ms, 5 % errors, 2 requests.
    fn min_spread(self) -> f64 {
        match self {
            Signal::LatencyP90 => 0.1,
            Signal::ErrorRate => 0.05,
            Signal::QueueDepth => 2.0,
        }
    }
}

#[derive(Default)]
struct Watch {
    detectors: BTreeMap<Signal, Detector>,
    latency: HistogramSnapshot,
    calls: u64,
    errors: u64,
    crash: Option<CrashLoop>,
    crash_reported: bool,
    autoscaler: Autoscaler,
    action: Option<AnomalyAction>,
    raised: BTreeMap<Signal, Evidence>,
}

pub(crate) struct Monitor {
    client: Client,
    interval: Duration,
    watches: HashMap<ServiceName, Watch>,
    cursor: u64,
    active: watch::Sender<Vec<ActiveAnomaly>>,
}

impl Monitor {
    pub(crate) fn new(
        client: Client,
        interval: Duration,
        active: watch::Sender<Vec<ActiveAnomaly>>,
    ) -> Self {
        let cursor = client.journal().last_seq();
        Monitor {
            client,
            interval,
            watches: HashMap::new(),
            cursor,
            active,
        }
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut next = Instant::now() + self.interval;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(next) => {}
            }
            next += self.interval;
            match self.client.snapshot().await {
                Ok(snapshot) => self.tick(&snapshot).await,
                Err(_) => return,
            }
        }
    }

    async fn tick(&mut self, snapshot: &Snapshot) {
        let now = Instant::now();
        self.read_failures(snapshot, now);
        let edges = self.client.bus().edges();
        let mut into: HashMap<&ServiceName, Vec<&crate::bus::EdgeSnapshot>> = HashMap::new();
        for e in &edges {
            into.entry(&e.callee).or_default().push(e);
        }
        // A service that is no longer up has no signal: whatever was raised for it ends, so a
        // held rollout or load shedding does not outlive the condition.
        let down: Vec<ServiceName> = snapshot
            .services
            .iter()
            .filter(|s| !s.state.is_up())
            .map(|s| s.spec.name.clone())
            .filter(|n| self.watches.get(n).is_some_and(|w| !w.raised.is_empty()))
            .collect();
        for name in down {
            if let Some(w) = self.watches.get_mut(&name) {
                w.raised.clear();
                w.detectors.clear();
                w.latency = HistogramSnapshot::default();
                w.calls = 0;
                w.errors = 0;
            }
            let _ = self.client.mark(&name, Mark::Shed(false)).await;
            let _ = self.client.mark(&name, Mark::Clear).await;
        }
        for status in snapshot.services.iter().filter(|s| s.state.is_up()) {
            let spec = &status.spec;
            let name = spec.name.clone();
            let w = self.watches.entry(name.clone()).or_default();
            w.action = Some(spec.anomaly.action);
            let mut latency = HistogramSnapshot::default();
            let (mut calls, mut errors) = (0, 0);
            for e in into.get(&name).map(Vec::as_slice).unwrap_or_default() {
                latency.merge(&e.latency);
                calls += e.calls;
                errors += e.errors + e.dead_lettered;
            }
            let delta = latency.minus(&w.latency);
            let new_calls = calls.saturating_sub(w.calls);
            let new_errors = errors.saturating_sub(w.errors);
            w.latency = latency;
            w.calls = calls;
            w.errors = errors;
            let p90 = delta.quantile(0.9);
            // Little's law: the requests in service on average = arrival rate × mean latency, which
            // is the latency accumulated in the interval divided by its length.
            let busy = (delta.count() > 0)
                .then(|| delta.sum_ns as f64 / 1e9 / self.interval.as_secs_f64().max(1e-9));
            let mut samples = vec![(Signal::QueueDepth, status.queue_depth as f64)];
            if let Some(p90) = p90 {
                samples.push((Signal::LatencyP90, p90.as_secs_f64() * 1e3));
            }
            if new_calls > 0 {
                samples.push((Signal::ErrorRate, new_errors as f64 / new_calls as f64));
            }
            let mut changes = Vec::new();
            for (signal, value) in samples {
                let policy = DetectorPolicy {
                    min_spread: signal.min_spread(),
                    ..spec.anomaly.detector
                };
                if let Some(change) = w
                    .detectors
                    .entry(signal)
                    .or_default()
                    .observe(&policy, value)
                {
                    changes.push((signal, change));
                }
            }
            let crash_loop = w.crash.as_mut().is_some_and(|c| c.active(now));
            let anomaly = spec.anomaly.action == AnomalyAction::ScaleOut
                && w.detectors.values().any(Detector::is_raised);
            let observation = Observation {
                replicas: status.replicas_running,
                min: spec.replicas.min,
                max: spec.replicas.max,
                queue_depth: status.queue_depth,
                latency_p90: p90,
                crash_loop,
                anomaly,
                busy,
            };
            let decision = w.autoscaler.decide(&spec.autoscale, &observation, now);
            for (signal, change) in changes {
                self.act(&name, spec.anomaly.action, signal, change).await;
            }
            match decision {
                Decision::Hold => {}
                Decision::Scale { to, reason } => {
                    let _ = self.client.scale(&name, to, reason).await;
                }
                Decision::Blocked { reason } => {
                    self.client.journal().append(
                        Some(&name),
                        None,
                        Event::ScaleRefused { reason },
                        Cause::Autoscaler,
                    );
                }
            }
        }
        self.publish();
    }

    /// Feeds failed exits from the journal to each service's crash-loop classifier.
    fn read_failures(&mut self, snapshot: &Snapshot, now: Instant) {
        let Ok(entries) = self.client.journal().read(self.cursor, usize::MAX) else {
            return;
        };
        for entry in entries {
            self.cursor = entry.seq;
            let (Some(service), Event::Exited { outcome, .. }) = (&entry.service, &entry.event)
            else {
                continue;
            };
            if !outcome.is_failure() {
                continue;
            }
            let Some(spec) = snapshot.service(service.as_str()).map(|s| &s.spec) else {
                continue;
            };
            let kind = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v["outcome"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let w = self.watches.entry(service.clone()).or_default();
            let crash = w.crash.get_or_insert_with(|| {
                CrashLoop::new(
                    spec.anomaly.crash_loop_count,
                    spec.anomaly.crash_loop_window,
                )
            });
            if crash.record(now, &kind) {
                if !w.crash_reported {
                    w.crash_reported = true;
                    self.client.journal().append(
                        Some(service),
                        None,
                        Event::CrashLoop {
                            failure: kind,
                            count: spec.anomaly.crash_loop_count,
                        },
                        Cause::Monitor,
                    );
                }
            } else {
                w.crash_reported = false;
            }
        }
    }

    async fn act(
        &mut self,
        service: &ServiceName,
        action: AnomalyAction,
        signal: Signal,
        change: Change,
    ) {
        let journal = self.client.journal().clone();
        if let Some(w) = self.watches.get_mut(service) {
            match change {
                Change::Raised(evidence) => w.raised.insert(signal, evidence),
                Change::Cleared(_) => w.raised.remove(&signal),
            };
        }
        match change {
            Change::Raised(evidence) => {
                journal.append(
                    Some(service),
                    None,
                    Event::Anomaly {
                        signal: signal.name().into(),
                        evidence,
                        action,
                    },
                    Cause::Monitor,
                );
                let reason = format!(
                    "anomaly: {} is {:.3}, baseline {:.3}",
                    signal.name(),
                    evidence.value,
                    evidence.baseline
                );
                let mark = match action {
                    AnomalyAction::Degrade => Some(Mark::Degrade(reason)),
                    AnomalyAction::Shed => Some(Mark::Shed(true)),
                    AnomalyAction::Alert | AnomalyAction::ScaleOut | AnomalyAction::HoldRollout => {
                        None
                    }
                };
                if let Some(mark) = mark {
                    let _ = self.client.mark(service, mark).await;
                }
            }
            Change::Cleared(evidence) => {
                journal.append(
                    Some(service),
                    None,
                    Event::AnomalyCleared {
                        signal: signal.name().into(),
                        evidence,
                    },
                    Cause::Monitor,
                );
                let still_raised = self
                    .watches
                    .get(service)
                    .is_some_and(|w| w.detectors.values().any(Detector::is_raised));
                if !still_raised {
                    let mark = match action {
                        AnomalyAction::Degrade => Some(Mark::Clear),
                        AnomalyAction::Shed => Some(Mark::Shed(false)),
                        _ => None,
                    };
                    if let Some(mark) = mark {
                        let _ = self.client.mark(service, mark).await;
                    }
                }
            }
        }
    }

    fn publish(&self) {
        let mut active = Vec::new();
        for (service, w) in &self.watches {
            for (signal, evidence) in &w.raised {
                active.push(ActiveAnomaly {
                    service: service.clone(),
                    signal: signal.name().into(),
                    action: w.action.unwrap_or(AnomalyAction::Alert),
                    evidence: *evidence,
                });
            }
        }
        active.sort_by(|a, b| (&a.service, &a.signal).cmp(&(&b.service, &b.signal)));
        self.active.send_if_modified(|current| {
            let same = current.len() == active.len()
                && current
                    .iter()
                    .zip(&active)
                    .all(|(a, b)| a.service == b.service && a.signal == b.signal);
            if same {
                false
            } else {
                *current = active;
                true
            }
        });
    }
}
