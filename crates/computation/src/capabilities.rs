//! The capability API a script sees: `kv` (the caller's storage namespace), `crypto` (signing with
//! the caller's keys, hashing, randomness), `console` (captured, bounded), plus `Math.random` and, in
//! deterministic mode, a fixed clock. Installed into each fresh context before the script runs, then
//! frozen, so nothing a script does to them outlives its run. A run without capabilities
//! ([`crate::Capabilities::None`]) gets `console` only; reading `kv` or `crypto` stops it.
//!
//! Capability calls block the worker thread on the service's async handles
//! (`tokio::runtime::Handle::block_on`) with the run's own deadline as the bus deadline (or its
//! caller's, if that is sooner), so a hung dependency cannot hold a worker past the run's time limit,
//! and a chain (request → computation → storage → crypto) gives up together.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use base64::Engine as _;
use rquickjs::function::{Opt, Rest};
use rquickjs::{Ctx, Exception, Function, Object, Value};
use runtime::rate::Allowance;
use sha2::{Digest, Sha256};

use crate::outcome::{ConsoleLine, Level};
use crate::run::{Deps, Run};

/// `Date.now()` in deterministic mode: 2000-01-01T00:00:00Z.
pub const DETERMINISTIC_NOW_MS: u64 = 946_684_800_000;
/// The most bytes one `crypto.randomBytes(n)` call returns.
pub const MAX_RANDOM_BYTES: usize = 1024;
/// The most keys one `kv.list(prefix)` returns; beyond it the call throws.
pub const MAX_LIST_KEYS: usize = 10_000;
/// Keys asked of storage per page while listing.
const LIST_PAGE: usize = 500;

/// Why a run was stopped from outside the script's own control flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    TimedOut,
    Cancelled,
    ConsoleLimit,
    /// The heap ran out where the script could not see it: in a promise job that failed, or in a
    /// reaction whose rejection no handler awaited (see `sandbox::exhausted`).
    MemoryLimit,
    /// The stack ran out in a promise job that failed with nothing to catch it.
    StackOverflow,
    /// A run without capabilities read this global.
    Refused(&'static str),
}

/// What the host lends one run: its caller, deadline, console and randomness. Lives on the worker
/// thread for one run only.
pub(crate) struct Host {
    pub(crate) owner: String,
    pub(crate) signing_key: Option<String>,
    pub(crate) grants: crate::Grants,
    allowance: Option<Allowance>,
    capabilities: crate::Capabilities,
    pub(crate) deadline: Instant,
    /// When the caller stops waiting ([`Run::caller_deadline`]).
    pub(crate) caller_deadline: Option<Instant>,
    /// The run's cancel flag: a capability call checks it too, since a script that spends its
    /// time in capability calls reaches the interrupt handler's poll only rarely.
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) deps: Deps,
    /// Set by the interrupt handler or a capability; once set, the interrupt handler stops the
    /// script at its next poll, and nothing can catch that.
    pub(crate) stop: Cell<Option<Stop>>,
    pub(crate) console: RefCell<Console>,
    random: RefCell<SplitMix64>,
    /// `Some` in deterministic mode: `crypto.randomBytes` draws from it instead of the OS.
    bytes: Option<RefCell<SplitMix64>>,
    deterministic: bool,
}

impl Host {
    /// What `run` may use until `deadline`; `seed` in deterministic mode.
    pub(crate) fn new(run: &Run, deadline: Instant, seed: Option<[u8; 32]>) -> Host {
        let (random, bytes) = match seed {
            Some(seed) => {
                let word = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&seed[i * 8..i * 8 + 8]);
                    u64::from_le_bytes(b)
                };
                (SplitMix64(word(0)), Some(RefCell::new(SplitMix64(word(1)))))
            }
            None => (SplitMix64(rand::random()), None),
        };
        Host {
            owner: run.owner.clone(),
            signing_key: run.signing_key.clone(),
            grants: run.grants,
            allowance: run.allowance.clone(),
            capabilities: run.capabilities,
            deadline,
            caller_deadline: run.caller_deadline,
            cancel: run.cancel.clone(),
            deps: run.deps.clone(),
            stop: Cell::new(None),
            console: RefCell::new(Console {
                lines: Vec::new(),
                bytes: 0,
                limit: run.limits.console_bytes,
            }),
            random: RefCell::new(random),
            deterministic: bytes.is_some(),
            bytes,
        }
    }

    /// The run's deadline, or its caller's if that is sooner, on tokio's clock, for bus calls.
    fn bus_deadline(&self) -> tokio::time::Instant {
        let deadline = self
            .caller_deadline
            .map_or(self.deadline, |caller| caller.min(self.deadline));
        tokio::time::Instant::now() + deadline.saturating_duration_since(Instant::now())
    }

    /// Why the run must stop now, if it must: a cancel, its caller gone, or its time limit.
    pub(crate) fn due(&self, now: Instant) -> Option<Stop> {
        if self.cancel.load(Ordering::Relaxed) || self.caller_deadline.is_some_and(|d| now >= d) {
            Some(Stop::Cancelled)
        } else if now >= self.deadline {
            Some(Stop::TimedOut)
        } else {
            None
        }
    }

    /// Runs a bus call to completion on this (non-async) thread.
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.deps.tokio.block_on(future)
    }
}

/// The seed of a deterministic run: a hash of its code and arguments.
pub(crate) fn seed(code: &str, args_json: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cloister.computation.deterministic\0");
    h.update((code.len() as u64).to_le_bytes());
    h.update(code.as_bytes());
    h.update(args_json.as_bytes());
    h.finalize().into()
}

/// Captured console output and its budget.
#[derive(Debug)]
pub(crate) struct Console {
    pub(crate) lines: Vec<ConsoleLine>,
    bytes: u64,
    limit: u64,
}

impl Console {
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

/// SplitMix64: small, fast, and the same sequence on every platform for a given seed.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// In deterministic mode, fixes the clock: `Date` (with no arguments, and `Date.now()`) and
/// `performance.now()`. Runs before any script code, on pristine intrinsics.
const FIX_CLOCK: &str = r#"(function (fixedNow) {
  'use strict';
  const RealDate = Date;
  const FixedDate = function Date(...a) {
    if (new.target === undefined) return new RealDate(fixedNow).toString();
    return Reflect.construct(RealDate, a.length === 0 ? [fixedNow] : a, new.target);
  };
  // Not `setPrototypeOf(FixedDate, RealDate)`: that would hand the real clock back through
  // `Object.getPrototypeOf(Date)`.
  FixedDate.prototype = RealDate.prototype;
  FixedDate.UTC = RealDate.UTC;
  FixedDate.parse = RealDate.parse;
  FixedDate.now = () => fixedNow;
  Object.defineProperty(RealDate.prototype, 'constructor', {
    value: FixedDate, writable: true, enumerable: false, configurable: true,
  });
  globalThis.Date = FixedDate;
  globalThis.performance = Object.freeze({ now: () => 0, timeOrigin: fixedNow });
})"#;

/// Freezes `object` and every value on it, and defines it as a read-only, non-configurable global:
/// a script can neither replace the API nor change what it does for the rest of the run. Done
/// from Rust (no JavaScript to compile on every run).
fn define_frozen<'js>(
    ctx: &Ctx<'js>,
    freeze: &Function<'js>,
    name: &str,
    object: Object<'js>,
) -> rquickjs::Result<()> {
    for value in object.values::<Value<'js>>() {
        freeze.call::<_, Value<'js>>((value?,))?;
    }
    freeze.call::<_, Value<'js>>((object.clone(),))?;
    // No flags: not writable, not enumerable, not configurable.
    ctx.globals()
        .prop(name, rquickjs::object::Property::from(object))
}

/// Installs the capability API into `ctx` for the run `host` describes.
pub(crate) fn install<'js>(ctx: &Ctx<'js>, host: &Rc<Host>) -> rquickjs::Result<()> {
    if host.capabilities == crate::Capabilities::None {
        refuse_account(ctx, host, "kv")?;
        refuse_account(ctx, host, "crypto")?;
    } else {
        install_account(ctx, host)?;
    }
    let console = Object::new(ctx.clone())?;
    for (name, level) in [
        ("log", Level::Log),
        ("info", Level::Info),
        ("warn", Level::Warn),
        ("error", Level::Error),
        ("debug", Level::Debug),
    ] {
        let h = host.clone();
        console.set(
            name,
            named(ctx, name, move |ctx: Ctx<'js>, args: Rest<Value<'js>>| {
                console_write(&h, &ctx, level, args.0)
            })?,
        )?;
    }

    let h = host.clone();
    let random = named(ctx, "random", move || h.random.borrow_mut().next_f64())?;
    let globals = ctx.globals();
    let freeze: Function = globals.get::<_, Object>("Object")?.get("freeze")?;
    define_frozen(ctx, &freeze, "console", console)?;
    globals.get::<_, Object>("Math")?.set("random", random)?;
    if host.deterministic {
        let fix_clock: Function = ctx.eval(FIX_CLOCK)?;
        fix_clock.call::<_, ()>((DETERMINISTIC_NOW_MS as f64,))?;
    }
    Ok(())
}

/// In a run without capabilities, `name` is a read-only global whose getter stops the run: the
/// script is told (it throws), and the interrupt handler ends the run at its next poll whatever
/// the script does with the exception. Nothing of the account's is behind it.
fn refuse_account<'js>(
    ctx: &Ctx<'js>,
    host: &Rc<Host>,
    name: &'static str,
) -> rquickjs::Result<()> {
    let h = host.clone();
    let getter = move |ctx: Ctx<'js>| -> rquickjs::Result<()> {
        if h.stop.get().is_none() {
            h.stop.set(Some(Stop::Refused(name)));
        }
        Err(Exception::throw_reference(
            &ctx,
            &format!("{name} is not available: this run has no capabilities"),
        ))
    };
    // No flags: not enumerable, not configurable, so the script cannot redefine it.
    ctx.globals()
        .prop(name, rquickjs::object::Accessor::new_get(getter))
}

/// `kv` and `crypto`, acting for the run's owner.
fn install_account<'js>(ctx: &Ctx<'js>, host: &Rc<Host>) -> rquickjs::Result<()> {
    let kv = Object::new(ctx.clone())?;
    let h = host.clone();
    kv.set(
        "get",
        named(ctx, "get", move |ctx: Ctx<'js>, key: Opt<Value<'js>>| {
            granted(&h, &ctx, h.grants.kv_get, "kv.get", "storage:get")?;
            kv_get(&h, &ctx, key.0)
        })?,
    )?;
    let h = host.clone();
    kv.set(
        "put",
        named(
            ctx,
            "put",
            move |ctx: Ctx<'js>, key: Opt<Value<'js>>, value: Opt<Value<'js>>| {
                granted(&h, &ctx, h.grants.kv_put, "kv.put", "storage:put")?;
                kv_put(&h, &ctx, key.0, value.0)
            },
        )?,
    )?;
    let h = host.clone();
    kv.set(
        "delete",
        named(ctx, "delete", move |ctx: Ctx<'js>, key: Opt<Value<'js>>| {
            granted(&h, &ctx, h.grants.kv_delete, "kv.delete", "storage:delete")?;
            kv_delete(&h, &ctx, key.0)
        })?,
    )?;
    let h = host.clone();
    kv.set(
        "list",
        named(
            ctx,
            "list",
            move |ctx: Ctx<'js>, prefix: Opt<Value<'js>>| {
                granted(&h, &ctx, h.grants.kv_list, "kv.list", "storage:list")?;
                kv_list(&h, &ctx, prefix.0)
            },
        )?,
    )?;

    let crypto = Object::new(ctx.clone())?;
    let h = host.clone();
    crypto.set(
        "sign",
        named(
            ctx,
            "sign",
            move |ctx: Ctx<'js>, message: Opt<Value<'js>>, key: Opt<Value<'js>>| {
                granted(&h, &ctx, h.grants.sign, "crypto.sign", "crypto:sign")?;
                sign(&h, &ctx, message.0, key.0)
            },
        )?,
    )?;
    let h = host.clone();
    crypto.set(
        "verify",
        named(
            ctx,
            "verify",
            move |ctx: Ctx<'js>,
                  message: Opt<Value<'js>>,
                  signature: Opt<Value<'js>>,
                  key: Opt<Value<'js>>| {
                granted(&h, &ctx, h.grants.verify, "crypto.verify", "crypto:verify")?;
                verify(&h, &ctx, message.0, signature.0, key.0)
            },
        )?,
    )?;
    let h = host.clone();
    crypto.set(
        "sha256",
        named(
            ctx,
            "sha256",
            move |ctx: Ctx<'js>, data: Opt<Value<'js>>| {
                check_running(&h, &ctx)?;
                let data = text(&ctx, "crypto.sha256(data): data", data.0)?;
                Ok::<_, rquickjs::Error>(hex::encode(Sha256::digest(data.as_bytes())))
            },
        )?,
    )?;
    let h = host.clone();
    crypto.set(
        "randomBytes",
        named(
            ctx,
            "randomBytes",
            move |ctx: Ctx<'js>, n: Opt<Value<'js>>| random_bytes(&h, &ctx, n.0),
        )?,
    )?;

    let freeze: Function = ctx.globals().get::<_, Object>("Object")?.get("freeze")?;
    define_frozen(ctx, &freeze, "kv", kv)?;
    define_frozen(ctx, &freeze, "crypto", crypto)?;
    Ok(())
}

/// Throws unless the caller's token lets the script make this call, and the account's rate limit
/// has a token for it (a call on the account's data counts as a request would).
fn granted<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    allowed: bool,
    call: &str,
    scope: &str,
) -> rquickjs::Result<()> {
    if !allowed {
        return Err(Exception::throw_message(
            ctx,
            &format!(
                "{call} needs the token scope {scope}, which the caller's token does not have"
            ),
        ));
    }
    match host.allowance.as_ref().map(Allowance::admit) {
        Some(Err(wait)) => Err(Exception::throw_range(
            ctx,
            &format!(
                "{call}: the account is over its rate limit (services.account.rate_per_second), which capability calls count against; retry in {} ms",
                wait.as_millis().max(1)
            ),
        )),
        _ => Ok(()),
    }
}

fn named<'js, P, F>(ctx: &Ctx<'js>, name: &str, f: F) -> rquickjs::Result<Function<'js>>
where
    F: rquickjs::function::IntoJsFunc<'js, P> + 'js,
{
    let f = Function::new(ctx.clone(), f)?;
    f.set_name(name)?;
    Ok(f)
}

/// Throws at once if the run was already stopped, so a capability never starts work for a run
/// that is over.
fn check_running<'js>(host: &Host, ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    if host.stop.get().is_none() {
        // Set the stop as the interrupt handler would: the script cannot catch its way past it.
        host.stop.set(host.due(Instant::now()));
    }
    if host.stop.get().is_some() {
        return Err(Exception::throw_internal(ctx, "the run is over"));
    }
    Ok(())
}

fn text<'js>(ctx: &Ctx<'js>, what: &str, value: Option<Value<'js>>) -> rquickjs::Result<String> {
    match value.as_ref().and_then(|v| v.as_string()) {
        Some(s) => s.to_string(),
        None => Err(Exception::throw_type(
            ctx,
            &format!("{what} must be a string"),
        )),
    }
}

fn optional_text<'js>(
    ctx: &Ctx<'js>,
    what: &str,
    value: Option<Value<'js>>,
) -> rquickjs::Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.is_undefined() || v.is_null() => Ok(None),
        Some(v) => text(ctx, what, Some(v)).map(Some),
    }
}

fn js_string<'js>(ctx: &Ctx<'js>, s: &str) -> rquickjs::Result<Value<'js>> {
    Ok(rquickjs::String::from_str(ctx.clone(), s)?.into_value())
}

fn fail<'js>(ctx: &Ctx<'js>, what: &str, e: impl std::fmt::Display) -> rquickjs::Error {
    Exception::throw_message(ctx, &format!("{what}: {e}"))
}

fn kv_get<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    key: Option<Value<'js>>,
) -> rquickjs::Result<Value<'js>> {
    check_running(host, ctx)?;
    let key = text(ctx, "kv.get(key): key", key)?;
    let answer = host.block_on(host.deps.storage.call_by(host.bus_deadline(), |reply| {
        storage::Request::Get {
            namespace: host.owner.clone(),
            key: key.clone(),
            reply,
        }
    }));
    match answer {
        Ok(Ok(value)) => match String::from_utf8(value.data) {
            Ok(s) => js_string(ctx, &s),
            Err(_) => Err(Exception::throw_type(
                ctx,
                &format!("kv.get: the value of {key:?} is not UTF-8 text"),
            )),
        },
        Ok(Err(storage::Error::NotFound(_))) => Ok(Value::new_null(ctx.clone())),
        Ok(Err(e)) => Err(fail(ctx, "kv.get", e)),
        Err(e) => Err(fail(ctx, "kv.get", e)),
    }
}

fn kv_put<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    key: Option<Value<'js>>,
    value: Option<Value<'js>>,
) -> rquickjs::Result<f64> {
    check_running(host, ctx)?;
    let key = text(ctx, "kv.put(key, value): key", key)?;
    let value = text(ctx, "kv.put(key, value): value", value)?;
    let answer = host.block_on(host.deps.storage.call_by(host.bus_deadline(), |reply| {
        storage::Request::Put {
            namespace: host.owner.clone(),
            key,
            value: value.into_bytes(),
            reply,
        }
    }));
    match answer {
        Ok(Ok(version)) => Ok(version as f64),
        Ok(Err(e)) => Err(fail(ctx, "kv.put", e)),
        Err(e) => Err(fail(ctx, "kv.put", e)),
    }
}

fn kv_delete<'js>(host: &Host, ctx: &Ctx<'js>, key: Option<Value<'js>>) -> rquickjs::Result<bool> {
    check_running(host, ctx)?;
    let key = text(ctx, "kv.delete(key): key", key)?;
    let answer = host.block_on(host.deps.storage.call_by(host.bus_deadline(), |reply| {
        storage::Request::Delete {
            namespace: host.owner.clone(),
            key,
            reply,
        }
    }));
    match answer {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(storage::Error::NotFound(_))) => Ok(false),
        Ok(Err(e)) => Err(fail(ctx, "kv.delete", e)),
        Err(e) => Err(fail(ctx, "kv.delete", e)),
    }
}

fn kv_list<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    prefix: Option<Value<'js>>,
) -> rquickjs::Result<Vec<String>> {
    check_running(host, ctx)?;
    let prefix = optional_text(ctx, "kv.list(prefix): prefix", prefix)?.unwrap_or_default();
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        check_running(host, ctx)?;
        let answer = host.block_on(host.deps.storage.call_by(host.bus_deadline(), |reply| {
            storage::Request::List {
                namespace: host.owner.clone(),
                prefix: prefix.clone(),
                after: after.take(),
                limit: LIST_PAGE,
                reply,
            }
        }));
        let page = match answer {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => return Err(fail(ctx, "kv.list", e)),
            Err(e) => return Err(fail(ctx, "kv.list", e)),
        };
        keys.extend(page.keys.into_iter().map(|l| l.key));
        if keys.len() > MAX_LIST_KEYS {
            return Err(Exception::throw_range(
                ctx,
                &format!(
                    "kv.list: more than {MAX_LIST_KEYS} keys start with {prefix:?}; list a longer prefix"
                ),
            ));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(keys),
        }
    }
}

fn sign<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    message: Option<Value<'js>>,
    key: Option<Value<'js>>,
) -> rquickjs::Result<String> {
    check_running(host, ctx)?;
    let message = text(ctx, "crypto.sign(message, keyId): message", message)?;
    let key = match optional_text(ctx, "crypto.sign(message, keyId): keyId", key)? {
        Some(key) => key,
        None => host.signing_key.clone().ok_or_else(|| {
            Exception::throw_message(
                ctx,
                "crypto.sign: no keyId given and the caller has no default signing key; pass the id of one of your keys",
            )
        })?,
    };
    let answer = host.block_on(host.deps.crypto.call_by(host.bus_deadline(), |reply| {
        crypto::Request::Sign {
            owner: host.owner.clone(),
            id: key,
            message: message.into_bytes(),
            der: false,
            reply,
        }
    }));
    match answer {
        Ok(Ok(signed)) => Ok(base64::engine::general_purpose::STANDARD.encode(signed.signature)),
        Ok(Err(e)) => Err(fail(ctx, "crypto.sign", e)),
        Err(e) => Err(fail(ctx, "crypto.sign", e)),
    }
}

fn verify<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    message: Option<Value<'js>>,
    signature: Option<Value<'js>>,
    key: Option<Value<'js>>,
) -> rquickjs::Result<bool> {
    check_running(host, ctx)?;
    let what = "crypto.verify(message, signature, keyId)";
    let message = text(ctx, &format!("{what}: message"), message)?;
    let signature = text(ctx, &format!("{what}: signature"), signature)?;
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(signature.as_bytes())
    else {
        return Err(Exception::throw_type(
            ctx,
            "crypto.verify: the signature is not base64 (as crypto.sign returns it)",
        ));
    };
    let key = match optional_text(ctx, &format!("{what}: keyId"), key)? {
        Some(key) => key,
        None => host.signing_key.clone().ok_or_else(|| {
            Exception::throw_message(
                ctx,
                "crypto.verify: no keyId given and the caller has no default signing key; pass the id of one of your keys",
            )
        })?,
    };
    let answer = host.block_on(host.deps.crypto.call_by(host.bus_deadline(), |reply| {
        crypto::Request::Verify {
            owner: host.owner.clone(),
            id: key,
            message: message.into_bytes(),
            signature,
            reply,
        }
    }));
    match answer {
        Ok(Ok(valid)) => Ok(valid),
        Ok(Err(crypto::Error::BadInput(_))) => Ok(false),
        Ok(Err(e)) => Err(fail(ctx, "crypto.verify", e)),
        Err(e) => Err(fail(ctx, "crypto.verify", e)),
    }
}

fn random_bytes<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    n: Option<Value<'js>>,
) -> rquickjs::Result<String> {
    check_running(host, ctx)?;
    let n = n.as_ref().and_then(|v| v.as_number()).unwrap_or(f64::NAN);
    if !(n >= 0.0 && n <= MAX_RANDOM_BYTES as f64 && n.fract() == 0.0) {
        return Err(Exception::throw_range(
            ctx,
            &format!("crypto.randomBytes(n): n must be an integer from 0 to {MAX_RANDOM_BYTES}"),
        ));
    }
    let mut out = vec![0u8; n as usize];
    match &host.bytes {
        Some(rng) => rng.borrow_mut().fill(&mut out),
        None => rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut out),
    }
    Ok(hex::encode(out))
}

/// Appends one console line, or stops the run if it would go over the console limit.
fn console_write<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    level: Level,
    args: Vec<Value<'js>>,
) -> rquickjs::Result<()> {
    if host.stop.get().is_some() {
        return Err(Exception::throw_internal(ctx, "the run is over"));
    }
    let limit = host.console.borrow().limit;
    let mut line = String::new();
    for (i, arg) in args.into_iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        format_value(host, ctx, &arg, &mut line)?;
        // Stop formatting as soon as the line alone is over the limit.
        if line.len() as u64 > limit {
            break;
        }
    }
    let mut console = host.console.borrow_mut();
    let size = line.len() as u64 + 1;
    if console.bytes + size > limit {
        drop(console);
        host.stop.set(Some(Stop::ConsoleLimit));
        return Err(Exception::throw_range(
            ctx,
            &format!("console output is over its limit of {limit} bytes"),
        ));
    }
    console.bytes += size;
    console.lines.push(ConsoleLine { level, text: line });
    Ok(())
}

fn format_value<'js>(
    host: &Host,
    ctx: &Ctx<'js>,
    value: &Value<'js>,
    out: &mut String,
) -> rquickjs::Result<()> {
    if let Some(s) = value.as_string() {
        out.push_str(&s.to_string()?);
        return Ok(());
    }
    if value.is_undefined() {
        out.push_str("undefined");
        return Ok(());
    }
    if !value.is_error() && !value.is_function() && !value.is_symbol() && !value.is_big_int() {
        match ctx.json_stringify(value.clone()) {
            Ok(Some(s)) => {
                out.push_str(&s.to_string()?);
                return Ok(());
            }
            Ok(None) => {}
            Err(e) => {
                if host.stop.get().is_some() {
                    return Err(e);
                }
                // A cycle or a throwing toJSON: fall back to String(value).
                let _ = ctx.catch();
            }
        }
    }
    match value.get::<rquickjs::Coerced<String>>() {
        Ok(s) => out.push_str(&s.0),
        Err(e) => {
            if host.stop.get().is_some() {
                return Err(e);
            }
            let _ = ctx.catch();
            out.push_str(&format!("[{}]", value.type_name()));
        }
    }
    Ok(())
}
