//! Per-run limits: the settings that declare each default and ceiling, and the resolution of a
//! request's overrides against them.
//!
//! Defaults apply live on a configuration change; ceilings are sandbox policy and are read at start
//! only (see [`Ceilings`]; the supervisor refuses a change to them, as to every start-only setting).

use std::time::Duration;

use runtime::setting::{Setting, Value};

use crate::Error;

/// Wall time of a run without a time_ms override, in milliseconds (capability calls count) (`default_time_ms`).
pub const DEFAULT_TIME_MS: Setting<Duration> = Setting::new(
    "default_time_ms",
    Duration::from_millis(5_000),
    Duration::from_millis(1),
    TIME_CEILING_BOUND,
    "wall time of a run without a time_ms override, in milliseconds (capability calls count)",
);
/// Highest time_ms a request may ask for; read at start only (`max_time_ms`).
pub const MAX_TIME_MS: Setting<Duration> = Setting::new(
    "max_time_ms",
    TIME_CEILING_BOUND,
    Duration::from_millis(1),
    TIME_CEILING_BOUND,
    "highest time_ms a request may ask for; read at start only",
)
.at_start();
/// QuickJS heap of a run without a memory_bytes override (`default_memory_bytes`).
pub const DEFAULT_MEMORY_BYTES: Setting<u64> = Setting::new(
    "default_memory_bytes",
    64 * MIB,
    MIB,
    4096 * MIB,
    "QuickJS heap of a run without a memory_bytes override",
);
/// Highest memory_bytes a request may ask for; read at start only (`max_memory_bytes`).
pub const MAX_MEMORY_BYTES: Setting<u64> = Setting::new(
    "max_memory_bytes",
    256 * MIB,
    MIB,
    4096 * MIB,
    "highest memory_bytes a request may ask for; read at start only",
)
.at_start();
/// JavaScript stack of a run without a stack_bytes override (`default_stack_bytes`).
pub const DEFAULT_STACK_BYTES: Setting<u64> = Setting::new(
    "default_stack_bytes",
    256 << 10,
    16 << 10,
    STACK_CEILING_BOUND,
    "JavaScript stack of a run without a stack_bytes override",
);
/// Highest stack_bytes a request may ask for; read at start only (`max_stack_bytes`).
pub const MAX_STACK_BYTES: Setting<u64> = Setting::new(
    "max_stack_bytes",
    1 << 20,
    16 << 10,
    STACK_CEILING_BOUND,
    "highest stack_bytes a request may ask for; read at start only",
)
.at_start();
/// Largest result (as JSON) of a run without an output_bytes override (`default_output_bytes`).
pub const DEFAULT_OUTPUT_BYTES: Setting<u64> = Setting::new(
    "default_output_bytes",
    MIB,
    2,
    256 * MIB,
    "largest result (as JSON) of a run without an output_bytes override",
);
/// Highest output_bytes a request may ask for; read at start only (`max_output_bytes`).
pub const MAX_OUTPUT_BYTES: Setting<u64> = Setting::new(
    "max_output_bytes",
    16 * MIB,
    2,
    256 * MIB,
    "highest output_bytes a request may ask for; read at start only",
)
.at_start();
/// Console output a run may write without a console_bytes override (`default_console_bytes`).
pub const DEFAULT_CONSOLE_BYTES: Setting<u64> = Setting::new(
    "default_console_bytes",
    64 << 10,
    0,
    64 * MIB,
    "console output a run may write without a console_bytes override",
);
/// Highest console_bytes a request may ask for; read at start only (`max_console_bytes`).
pub const MAX_CONSOLE_BYTES: Setting<u64> = Setting::new(
    "max_console_bytes",
    MIB,
    0,
    64 * MIB,
    "highest console_bytes a request may ask for; read at start only",
)
.at_start();
/// Largest program source, in bytes; read at start only (`max_code_bytes`).
pub const MAX_CODE_BYTES: Setting<u64> = Setting::new(
    "max_code_bytes",
    MIB,
    1,
    64 * MIB,
    "largest program source, in bytes; read at start only",
)
.at_start();
/// Largest args, as JSON bytes; read at start only (`max_args_bytes`).
pub const MAX_ARGS_BYTES: Setting<u64> = Setting::new(
    "max_args_bytes",
    MIB,
    2,
    64 * MIB,
    "largest args, as JSON bytes; read at start only",
)
.at_start();
/// Finished jobs kept per owner; the oldest is dropped first (`max_finished_jobs`).
pub const MAX_FINISHED_JOBS: Setting<usize> = Setting::new(
    "max_finished_jobs",
    100,
    1,
    100_000,
    "finished jobs kept per owner; the oldest is dropped first",
);
/// Runs waiting for a worker; beyond it requests are refused as busy (`max_queued_runs`).
pub const MAX_QUEUED_RUNS: Setting<usize> = Setting::new(
    "max_queued_runs",
    256,
    1,
    100_000,
    "runs waiting for a worker; beyond it requests are refused as busy",
);
/// What one account's finished jobs may keep (results and console output), in bytes; past it its
/// oldest go (`max_kept_bytes_per_account`).
pub const MAX_KEPT_BYTES_PER_ACCOUNT: Setting<u64> = Setting::new(
    "max_kept_bytes_per_account",
    64 * MIB,
    MIB,
    64 * 1024 * MIB,
    "what one account's finished jobs may keep (results and console output), in bytes; past it its oldest go",
);
/// What every account's finished jobs may keep together, in bytes; past it the oldest of the
/// account keeping the most go (`max_kept_bytes`).
pub const MAX_KEPT_BYTES: Setting<u64> = Setting::new(
    "max_kept_bytes",
    256 * MIB,
    MIB,
    64 * 1024 * MIB,
    "what every account's finished jobs may keep together, in bytes; past it the oldest of the account keeping the most go",
);
/// Percent of the workers one account's runs may hold at once, rounded up and at least one; its
/// other runs wait while other accounts' runs take the free workers (`account_worker_share`).
pub const ACCOUNT_WORKER_SHARE: Setting<u32> = Setting::new(
    "account_worker_share",
    50,
    1,
    100,
    "percent of the workers one account's runs may hold at once (rounded up, at least one); its other runs wait while other accounts' runs take the free workers",
);
/// Runs and jobs one owner may have queued or running at once, so one account cannot fill the queue (`max_active_per_account`).
pub const MAX_ACTIVE_PER_ACCOUNT: Setting<usize> = Setting::new(
    "max_active_per_account",
    32,
    1,
    100_000,
    "runs and jobs one owner may have queued or running at once, so one account cannot fill the queue",
);

const MIB: u64 = 1 << 20;

/// The highest `max_time_ms` a configuration may set. With the watchdog's grace (half the limit
/// again) a run is answered within 45 s, inside the service's 60 s default call deadline.
pub const TIME_CEILING_BOUND: Duration = Duration::from_secs(30);
/// The highest `max_stack_bytes` a configuration may set; worker threads get this much native
/// stack plus [`STACK_HEADROOM`], so QuickJS's own stack check always fires first.
pub(crate) const STACK_CEILING_BOUND: u64 = 8 << 20;
/// Native stack a worker keeps beyond the JavaScript stack limit, for the host's own frames.
pub(crate) const STACK_HEADROOM: usize = 2 << 20;

/// Declares every setting on `spec`.
pub(crate) fn declare(spec: runtime::Spec) -> runtime::Spec {
    spec.setting(&DEFAULT_TIME_MS)
        .setting(&MAX_TIME_MS)
        .setting(&DEFAULT_MEMORY_BYTES)
        .setting(&MAX_MEMORY_BYTES)
        .setting(&DEFAULT_STACK_BYTES)
        .setting(&MAX_STACK_BYTES)
        .setting(&DEFAULT_OUTPUT_BYTES)
        .setting(&MAX_OUTPUT_BYTES)
        .setting(&DEFAULT_CONSOLE_BYTES)
        .setting(&MAX_CONSOLE_BYTES)
        .setting(&MAX_CODE_BYTES)
        .setting(&MAX_ARGS_BYTES)
        .setting(&MAX_FINISHED_JOBS)
        .setting(&MAX_KEPT_BYTES_PER_ACCOUNT)
        .setting(&MAX_KEPT_BYTES)
        .setting(&MAX_ACTIVE_PER_ACCOUNT)
        .setting(&MAX_QUEUED_RUNS)
        .setting(&ACCOUNT_WORKER_SHARE)
}

pub use wire::computation::{LimitOverrides, Limits};

/// When the watchdog gives up on a run that stopped polling its interrupt handler: half the limit
/// again, and at least 50 ms more.
pub(crate) fn hard_time(limits: &Limits) -> Duration {
    let limit = limits.time();
    limit + (limit / 2).max(Duration::from_millis(50))
}

/// The sandbox ceilings: read at start only, since they bound what the enclave lends to one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ceilings {
    pub(crate) time_ms: u64,
    pub(crate) memory_bytes: u64,
    pub(crate) stack_bytes: u64,
    pub(crate) output_bytes: u64,
    pub(crate) console_bytes: u64,
    pub(crate) code_bytes: u64,
    pub(crate) args_bytes: u64,
}

/// A setting's value as the integer the limits count in (a duration in milliseconds).
fn value<T: Value>(spec: &runtime::Spec, setting: &Setting<T>) -> u64 {
    u64::try_from(spec.get(setting).to_raw()).unwrap_or(0)
}

impl Ceilings {
    pub(crate) fn of(spec: &runtime::Spec) -> Ceilings {
        Ceilings {
            time_ms: value(spec, &MAX_TIME_MS),
            memory_bytes: value(spec, &MAX_MEMORY_BYTES),
            stack_bytes: value(spec, &MAX_STACK_BYTES),
            output_bytes: value(spec, &MAX_OUTPUT_BYTES),
            console_bytes: value(spec, &MAX_CONSOLE_BYTES),
            code_bytes: value(spec, &MAX_CODE_BYTES),
            args_bytes: value(spec, &MAX_ARGS_BYTES),
        }
    }
}

/// The defaults in force and the ceilings fixed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) ceilings: Ceilings,
    defaults: Defaults,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Defaults {
    time_ms: u64,
    memory_bytes: u64,
    stack_bytes: u64,
    output_bytes: u64,
    console_bytes: u64,
}

/// Problems with a spec's limits: a default above its ceiling.
pub(crate) fn check(spec: &runtime::Spec) -> Result<(), String> {
    let time = [(&DEFAULT_TIME_MS, &MAX_TIME_MS)]
        .map(|(d, c)| (d.name(), c.name(), value(spec, d), value(spec, c)));
    let bytes = [
        (&DEFAULT_MEMORY_BYTES, &MAX_MEMORY_BYTES),
        (&DEFAULT_STACK_BYTES, &MAX_STACK_BYTES),
        (&DEFAULT_OUTPUT_BYTES, &MAX_OUTPUT_BYTES),
        (&DEFAULT_CONSOLE_BYTES, &MAX_CONSOLE_BYTES),
    ]
    .map(|(d, c)| (d.name(), c.name(), value(spec, d), value(spec, c)));
    for (default, ceiling, d, c) in time.into_iter().chain(bytes) {
        if d > c {
            return Err(format!(
                "services.computation.{default} ({d}) is above its ceiling {ceiling} ({c}): lower it or raise the ceiling"
            ));
        }
    }
    Ok(())
}

impl Policy {
    /// The policy of `spec`, under `ceilings` (those read at start).
    pub(crate) fn new(spec: &runtime::Spec, ceilings: Ceilings) -> Policy {
        Policy {
            ceilings,
            defaults: Defaults {
                time_ms: value(spec, &DEFAULT_TIME_MS).min(ceilings.time_ms),
                memory_bytes: value(spec, &DEFAULT_MEMORY_BYTES).min(ceilings.memory_bytes),
                stack_bytes: value(spec, &DEFAULT_STACK_BYTES).min(ceilings.stack_bytes),
                output_bytes: value(spec, &DEFAULT_OUTPUT_BYTES).min(ceilings.output_bytes),
                console_bytes: value(spec, &DEFAULT_CONSOLE_BYTES).min(ceilings.console_bytes),
            },
        }
    }

    /// The limits of one run: each override if given (it must be positive and at most the
    /// ceiling), else the default.
    pub(crate) fn resolve(&self, overrides: &LimitOverrides) -> Result<Limits, Error> {
        let pick = |what: &'static str,
                    requested: Option<u64>,
                    default: u64,
                    ceiling: u64,
                    setting: &'static str|
         -> Result<u64, Error> {
            match requested {
                None => Ok(default),
                Some(0) if what != "console_bytes" => Err(Error::BadInput(format!(
                    "limits.{what} must be positive (or left out for the default, {default})"
                ))),
                Some(n) if n > ceiling => Err(Error::AboveCeiling {
                    what,
                    requested: n,
                    ceiling,
                    setting,
                }),
                Some(n) => Ok(n),
            }
        };
        let c = &self.ceilings;
        let d = &self.defaults;
        Ok(Limits {
            time_ms: pick(
                "time_ms",
                overrides.time_ms,
                d.time_ms,
                c.time_ms,
                MAX_TIME_MS.name(),
            )?,
            memory_bytes: pick(
                "memory_bytes",
                overrides.memory_bytes,
                d.memory_bytes,
                c.memory_bytes,
                MAX_MEMORY_BYTES.name(),
            )?,
            stack_bytes: pick(
                "stack_bytes",
                overrides.stack_bytes,
                d.stack_bytes,
                c.stack_bytes,
                MAX_STACK_BYTES.name(),
            )?,
            output_bytes: pick(
                "output_bytes",
                overrides.output_bytes,
                d.output_bytes,
                c.output_bytes,
                MAX_OUTPUT_BYTES.name(),
            )?,
            console_bytes: pick(
                "console_bytes",
                overrides.console_bytes,
                d.console_bytes,
                c.console_bytes,
                MAX_CONSOLE_BYTES.name(),
            )?,
            code_bytes: c.code_bytes,
            args_bytes: c.args_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let spec = crate::Computation::default_spec();
        Policy::new(&spec, Ceilings::of(&spec))
    }

    #[test]
    fn defaults_apply_without_overrides() {
        let limits = policy()
            .resolve(&LimitOverrides::default())
            .expect("defaults");
        assert_eq!(limits.time_ms, 5_000);
        assert_eq!(limits.memory_bytes, 64 << 20);
        assert_eq!(limits.stack_bytes, 256 << 10);
    }

    #[test]
    fn overrides_up_to_the_ceiling_and_no_further() {
        let p = policy();
        let ok = p
            .resolve(&LimitOverrides {
                time_ms: Some(TIME_CEILING_BOUND.as_millis() as u64),
                ..Default::default()
            })
            .expect("at the ceiling");
        assert_eq!(ok.time_ms, TIME_CEILING_BOUND.as_millis() as u64);
        let above = p.resolve(&LimitOverrides {
            memory_bytes: Some((256 << 20) + 1),
            ..Default::default()
        });
        match above {
            Err(Error::AboveCeiling { what, setting, .. }) => {
                assert_eq!(what, "memory_bytes");
                assert_eq!(setting, MAX_MEMORY_BYTES.name());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            p.resolve(&LimitOverrides {
                time_ms: Some(0),
                ..Default::default()
            }),
            Err(Error::BadInput(_))
        ));
    }

    #[test]
    fn a_default_above_its_ceiling_is_refused() {
        let mut spec = crate::Computation::default_spec();
        spec.set(&DEFAULT_TIME_MS, Duration::from_secs(20));
        spec.set(&MAX_TIME_MS, Duration::from_secs(10));
        assert!(check(&spec).is_err());
    }
}
