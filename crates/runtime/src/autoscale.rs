//! Autoscaling as a pure decision: replicas between min and max, out on queue depth or latency over
//! the objective, in after a stabilization window, never into a crash loop. The supervisor enforces
//! the enclave budget when it carries a decision out.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Autoscaling settings of one service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AutoscalePolicy {
    /// Whether the autoscaler may change the replica count.
    pub enabled: bool,
    /// Queued requests per running replica above which it scales out.
    pub queue_per_replica: u32,
    /// p90 latency above which it scales out.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub latency_objective: Duration,
    /// How long load must stay low before it scales in.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub scale_in_after: Duration,
    /// Minimum time between two scale-outs.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub cooldown: Duration,
}

impl Default for AutoscalePolicy {
    fn default() -> Self {
        AutoscalePolicy {
            enabled: false,
            queue_per_replica: 8,
            latency_objective: Duration::from_millis(100),
            scale_in_after: Duration::from_secs(60),
            cooldown: Duration::from_secs(5),
        }
    }
}

/// What the monitor saw of a service in one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Replicas running.
    pub replicas: u32,
    /// The fewest replicas allowed.
    pub min: u32,
    /// The most replicas allowed.
    pub max: u32,
    /// Requests waiting in the mailbox.
    pub queue_depth: usize,
    /// p90 latency of calls over the interval; `None` without calls.
    pub latency_p90: Option<Duration>,
    /// The service is in a crash loop (a scale-out would not help).
    pub crash_loop: bool,
    /// An anomaly whose configured action is `scale_out` is raised.
    pub anomaly: bool,
    /// Requests in service on average over the interval (Little's law: arrival rate × mean latency),
    /// that is, how many replicas the load keeps busy. `None` without traffic.
    pub busy: Option<f64>,
}

/// The share of a replica's time the autoscaler aims to keep busy when it scales in.
const TARGET_UTILIZATION: f64 = 0.7;

/// What the autoscaler decides for one interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Leave the replica count as it is.
    Hold,
    /// Scale to `to` replicas, for `reason`.
    Scale {
        /// The replica count wanted.
        to: u32,
        /// Why.
        reason: String,
    },
    /// Would scale out, but must not.
    Blocked {
        /// Why not.
        reason: String,
    },
}

/// Per-service memory of the autoscaler.
#[derive(Debug, Clone, Default)]
pub struct Autoscaler {
    last_out: Option<Instant>,
    calm_since: Option<Instant>,
    blocked: Option<String>,
}

impl Autoscaler {
    /// Decides for one interval's observation at `now`, remembering cooldowns and calm periods.
    pub fn decide(&mut self, policy: &AutoscalePolicy, o: &Observation, now: Instant) -> Decision {
        if !policy.enabled {
            return Decision::Hold;
        }
        let replicas = o.replicas.max(1);
        let queue_high = o.queue_depth > (policy.queue_per_replica as usize) * replicas as usize;
        let slow = o.latency_p90.is_some_and(|l| l > policy.latency_objective);
        if o.replicas < o.min {
            return Decision::Scale {
                to: o.min,
                reason: format!("below the minimum of {}", o.min),
            };
        }
        if queue_high || slow || o.anomaly {
            self.calm_since = None;
            let why = if queue_high {
                format!(
                    "queue depth {} over {} per replica",
                    o.queue_depth, policy.queue_per_replica
                )
            } else if slow {
                format!(
                    "p90 latency {} ms over the objective of {} ms",
                    o.latency_p90.unwrap_or_default().as_millis(),
                    policy.latency_objective.as_millis()
                )
            } else {
                "a latency or queue anomaly".to_owned()
            };
            let blocked = if o.crash_loop {
                Some(format!("{why}, but the service is in a crash loop"))
            } else if o.replicas >= o.max {
                Some(format!(
                    "{why}, but it already runs its maximum of {} replicas",
                    o.max
                ))
            } else {
                None
            };
            if let Some(reason) = blocked {
                // Say it once per episode, not every interval.
                if self.blocked.as_deref() == Some(reason.as_str()) {
                    return Decision::Hold;
                }
                self.blocked = Some(reason.clone());
                return Decision::Blocked { reason };
            }
            if self
                .last_out
                .is_some_and(|t| now.saturating_duration_since(t) < policy.cooldown)
            {
                return Decision::Hold;
            }
            self.last_out = Some(now);
            self.blocked = None;
            // Proportional, as Kubernetes' HPA: as many replicas as the load asks for, at least one
            // more, at most double, within the maximum.
            let per_replica = policy.queue_per_replica.max(1) as usize;
            let for_queue = o.queue_depth.div_ceil(per_replica) as u32;
            let for_latency = match o.latency_p90 {
                Some(l) if slow => {
                    let ratio = l.as_secs_f64() / policy.latency_objective.as_secs_f64().max(1e-9);
                    (f64::from(replicas) * ratio).ceil() as u32
                }
                _ => 0,
            };
            let to = for_queue
                .max(for_latency)
                .max(o.replicas + 1)
                .min(replicas.saturating_mul(2))
                .min(o.max);
            return Decision::Scale { to, reason: why };
        }
        self.blocked = None;
        // Enough replicas for the load at the target utilization; calm only if fewer would do.
        let needed = o
            .busy
            .map_or(0, |b| (b / TARGET_UTILIZATION).ceil() as u32)
            .max(o.min.max(1));
        let calm = o.queue_depth == 0
            && o.latency_p90
                .is_none_or(|l| l * 2 <= policy.latency_objective)
            && needed < o.replicas;
        if !calm || o.replicas <= o.min {
            self.calm_since = None;
            return Decision::Hold;
        }
        let since = *self.calm_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= policy.scale_in_after {
            self.calm_since = Some(now);
            // Down to what the load needs, at most halving at once.
            let to = needed.max(o.replicas.div_ceil(2)).min(o.replicas - 1);
            return Decision::Scale {
                to,
                reason: format!(
                    "load stayed low for {} (about {:.1} replicas busy)",
                    humantime::format_duration(policy.scale_in_after),
                    o.busy.unwrap_or(0.0)
                ),
            };
        }
        Decision::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AutoscalePolicy {
        AutoscalePolicy {
            enabled: true,
            queue_per_replica: 4,
            latency_objective: Duration::from_millis(100),
            scale_in_after: Duration::from_secs(30),
            cooldown: Duration::from_secs(5),
        }
    }

    fn obs(replicas: u32, queue: usize, p90_ms: Option<u64>) -> Observation {
        Observation {
            replicas,
            min: 1,
            max: 4,
            queue_depth: queue,
            latency_p90: p90_ms.map(Duration::from_millis),
            crash_loop: false,
            anomaly: false,
            busy: None,
        }
    }

    /// Runs observations one second apart; returns the replica count after each, applying decisions.
    fn run(steps: &[(usize, Option<u64>)], crash_loop: bool) -> Vec<u32> {
        let mut a = Autoscaler::default();
        let t0 = Instant::now();
        let mut replicas = 1;
        steps
            .iter()
            .enumerate()
            .map(|(i, &(queue, p90))| {
                let o = Observation {
                    crash_loop,
                    ..obs(replicas, queue, p90)
                };
                if let Decision::Scale { to, .. } =
                    a.decide(&policy(), &o, t0 + Duration::from_secs(i as u64))
                {
                    replicas = to;
                }
                replicas
            })
            .collect()
    }

    #[test]
    fn scales_out_on_queue_or_latency_with_cooldown_and_up_to_max() {
        let busy = vec![(100, None); 20];
        assert_eq!(
            run(&busy, false),
            [2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]
        );
        let slow = vec![(0, Some(300)); 7];
        assert_eq!(run(&slow, false), [2, 2, 2, 2, 2, 4, 4]);
    }

    #[test]
    fn never_scales_out_into_a_crash_loop() {
        let busy = vec![(100, None); 10];
        assert_eq!(run(&busy, true), [1; 10]);
        let mut a = Autoscaler::default();
        let o = Observation {
            crash_loop: true,
            ..obs(1, 100, None)
        };
        let now = Instant::now();
        assert!(
            matches!(a.decide(&policy(), &o, now), Decision::Blocked { ref reason } if reason.contains("crash loop"))
        );
        assert_eq!(
            a.decide(&policy(), &o, now + Duration::from_secs(1)),
            Decision::Hold,
            "said once per episode"
        );
    }

    #[test]
    fn scales_in_after_the_stabilization_window() {
        let mut steps = vec![(100, None); 6];
        steps.extend(vec![(0, Some(10)); 70]);
        let got = run(&steps, false);
        assert_eq!(got[5], 4);
        // Calm from step 6: 30 s later it halves, 30 s after that it reaches the minimum.
        assert_eq!(got[35], 4);
        assert_eq!(got[36], 2);
        assert_eq!(got[65], 2);
        assert_eq!(got[66], 1);
        assert_eq!(*got.last().unwrap_or(&0), 1);
    }

    #[test]
    fn never_scales_in_below_what_the_load_keeps_busy() {
        let p = policy();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let quiet = |busy: f64| Observation {
            busy: Some(busy),
            ..obs(4, 0, Some(20))
        };
        // 2.5 replicas busy: 4 are needed at 70 % utilization, so 4 replicas are not "calm".
        let mut a = Autoscaler::default();
        for s in 0..100 {
            assert_eq!(a.decide(&p, &quiet(2.5), at(s)), Decision::Hold);
        }
        // 1 replica busy: 2 are enough; after the window it goes straight to 2.
        let mut a = Autoscaler::default();
        assert_eq!(a.decide(&p, &quiet(1.0), at(0)), Decision::Hold);
        assert!(matches!(
            a.decide(&p, &quiet(1.0), at(30)),
            Decision::Scale { to: 2, .. }
        ));
    }
}
