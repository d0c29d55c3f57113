//! The enclave's fixed budget: memory and threads declared in `[enclave]` (as a Gramine manifest
//! declares `sgx.enclave_size` and `sgx.max_threads`). Services' minimum demand must fit at start; the
//! autoscaler and later the computation service's workers draw from what is left.

use serde::Serialize;

use crate::Spec;

/// What the runtime itself needs besides its services: the supervisor, the API and the async workers.
pub const RUNTIME_RESERVE: Demand = Demand {
    memory_mib: 32,
    threads: 2,
};

/// Threads the process runs outside the services' count and the reserve's async workers: the
/// main thread (which waits on the async runtime) and the configuration file's watcher.
pub const PROCESS_THREADS: u64 = 2;

/// The most blocking threads the async runtime keeps where threads are a fixed budget (under
/// Gramine): journal reads, quotes, storage commits and the ai service's loading and training
/// queue for them beyond this.
pub const BLOCKING_THREADS: u64 = 8;

/// Every thread the process may run with `budget`: the services' threads and the runtime's
/// async workers (both inside `budget.threads`, which [`check`] holds the minimum to), the
/// blocking pool ([`BLOCKING_THREADS`]) and [`PROCESS_THREADS`]. An enclave with fewer thread
/// slots than this could refuse the process a thread it was promised.
pub fn process_threads(budget: Demand) -> u64 {
    budget.threads + BLOCKING_THREADS + PROCESS_THREADS
}

/// Memory and threads: what services take, or what the enclave has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Demand {
    /// Memory, in MiB.
    pub memory_mib: u64,
    /// Threads.
    pub threads: u64,
}

impl Demand {
    /// What `replicas` replicas of `spec` take.
    pub fn of(spec: &Spec, replicas: u32) -> Demand {
        Demand {
            memory_mib: u64::from(spec.resources.min_memory_mib) * u64::from(replicas),
            threads: u64::from(spec.resources.cpu_cores) * u64::from(replicas),
        }
    }

    /// Both demands together.
    pub fn plus(self, other: Demand) -> Demand {
        Demand {
            memory_mib: self.memory_mib + other.memory_mib,
            threads: self.threads + other.threads,
        }
    }

    /// Whether it fits in `budget`.
    pub fn fits(self, budget: Demand) -> bool {
        self.memory_mib <= budget.memory_mib && self.threads <= budget.threads
    }
}

/// The minimum the runtime and `specs` need, each service at its minimum replicas.
pub fn minimum(specs: &[Spec]) -> Demand {
    specs.iter().fold(RUNTIME_RESERVE, |d, s| {
        d.plus(Demand::of(s, s.replicas.min))
    })
}

/// Problems (path, message) if the minimum demand of `specs` does not fit `budget`.
pub fn check(specs: &[Spec], budget: Demand) -> Vec<(String, String)> {
    let need = minimum(specs);
    let mut problems = Vec::new();
    let top = |f: fn(&Demand) -> u64| {
        let mut parts: Vec<(u64, String)> = specs
            .iter()
            .map(|s| (f(&Demand::of(s, s.replicas.min)), s.name.to_string()))
            .filter(|(n, _)| *n > 0)
            .collect();
        parts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        parts
            .iter()
            .take(5)
            .map(|(n, name)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if need.memory_mib > budget.memory_mib {
        problems.push((
            "enclave.memory_mib".to_owned(),
            format!(
                "the enabled services need at least {} MiB at their minimum replicas ({}; plus {} for the runtime) but the budget is {} MiB",
                need.memory_mib,
                top(|d| d.memory_mib),
                RUNTIME_RESERVE.memory_mib,
                budget.memory_mib
            ),
        ));
    }
    if need.threads > budget.threads {
        problems.push((
            "enclave.threads".to_owned(),
            format!(
                "the enabled services need at least {} threads at their minimum replicas ({}; plus {} for the runtime) but the budget is {}",
                need.threads,
                top(|d| d.threads),
                RUNTIME_RESERVE.threads,
                budget.threads
            ),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, ServiceName};

    fn spec(name: &'static str, mib: u32, cores: u16, min: u32) -> Spec {
        let mut s = Spec::new(ServiceName::from_static(name), Kind::Core);
        s.resources.min_memory_mib = mib;
        s.resources.cpu_cores = cores;
        s.replicas.min = min;
        s.replicas.max = min.max(4);
        s
    }

    #[test]
    fn the_process_threads_cover_the_budget_and_what_runs_outside_it() {
        let budget = Demand {
            memory_mib: 64,
            threads: 10,
        };
        assert_eq!(
            process_threads(budget),
            10 + BLOCKING_THREADS + PROCESS_THREADS
        );
        assert!(process_threads(budget) > budget.threads);
    }

    #[test]
    fn demand_adds_up_and_names_the_biggest() {
        let specs = [spec("a", 100, 1, 2), spec("b", 50, 2, 1)];
        assert_eq!(
            minimum(&specs),
            Demand {
                memory_mib: 32 + 200 + 50,
                threads: 2 + 2 + 2
            }
        );
        assert!(
            check(
                &specs,
                Demand {
                    memory_mib: 282,
                    threads: 6
                }
            )
            .is_empty()
        );
        let problems = check(
            &specs,
            Demand {
                memory_mib: 281,
                threads: 5,
            },
        );
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].0, "enclave.memory_mib");
        assert!(
            problems[0].1.contains("at least 282 MiB") && problems[0].1.contains("a 200, b 50"),
            "{}",
            problems[0].1
        );
        assert!(
            problems[1].1.contains("at least 6 threads"),
            "{}",
            problems[1].1
        );
    }
}
