//! The service seam: a [`Service`] is a recipe (immutable config and handles to its dependencies); each
//! call of [`Service::run`] is one incarnation that owns its mutable state and reads its [`Context`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Mailbox, MailboxControl, Receiver};
use crate::event::Fault;
use crate::health::Health;
use crate::incarnation::{Control, IncarnationId, Report};
use crate::setting::Veto;
use crate::{ServiceName, Spec};

/// A service the runtime can host.
pub trait Service: Send + Sync + 'static {
    /// The requests its handle carries; replies travel in [`crate::Reply`]s inside them.
    type Request: crate::bus::Operation;

    /// The service's own defaults; configuration may override parts of it before registration.
    fn spec(&self) -> Spec;

    /// Runs one incarnation until asked to stop ([`Context::recv`] returns `None`) or until it fails.
    /// Returning `Ok` without being asked to stop is a failure too.
    fn run(
        &self,
        cx: Context<Self::Request>,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;

    /// Checks a new spec from a configuration change before anything is applied; a [`Veto`]
    /// rejects the whole configuration with its message. Running incarnations see an accepted spec through
    /// [`Context::spec_changes`].
    fn validate(&self, new: &Spec) -> Result<(), Veto> {
        let _ = new;
        Ok(())
    }

    /// Whether running incarnations can take the change from `old` to `new` through
    /// [`Context::spec_changes`]; if not, the service is restarted to take it. The runtime's own
    /// settings always apply live; a service answers for what its incarnations read from the spec.
    fn takes_live(&self, old: &Spec, new: &Spec) -> bool {
        let _ = (old, new);
        true
    }
}

/// Why an incarnation failed. Converts from any error, like `anyhow::Error` (so it does not implement
/// `std::error::Error` itself).
pub struct ServiceError {
    message: String,
    needs_operator: bool,
}

impl ServiceError {
    /// A failure a restart may fix, with its message.
    pub fn new(message: impl Into<String>) -> Self {
        ServiceError {
            message: message.into(),
            needs_operator: false,
        }
    }

    /// A failure no restart can change, only an operator (the message says what to do): the
    /// service goes to `failed` at once with this reason, whatever its recovery strategy.
    pub fn needs_operator(message: impl Into<String>) -> Self {
        ServiceError {
            message: message.into(),
            needs_operator: true,
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether only an operator can lift this failure (see [`ServiceError::needs_operator`]).
    pub fn is_for_operator(&self) -> bool {
        self.needs_operator
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ServiceError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ServiceError {
            message,
            needs_operator: false,
        }
    }
}

impl fmt::Debug for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How an incarnation was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Full function.
    Normal,
    /// Restarted by the `degrade` strategy after this failure: serve what still works.
    Degraded {
        /// The failure it was restarted after.
        reason: String,
    },
}

/// What an incarnation sees of the runtime.
pub struct Context<R> {
    id: IncarnationId,
    name: ServiceName,
    mailbox: Arc<Mailbox<R>>,
    control: crate::incarnation::ControlReceiver,
    /// Its place among the receivers of the mailbox's queue.
    receiver: Receiver,
    reports: mpsc::UnboundedSender<Report>,
    stop: CancellationToken,
    injected_error: Arc<AtomicBool>,
    /// An injected hang was taken: every later `recv` waits forever too, so a service that polls
    /// `recv` beside other work (and drops that future when the other work wins) stays hung.
    hung: bool,
    mode: Mode,
    bus: Bus,
    ready: bool,
    health: Health,
    spec: tokio::sync::watch::Receiver<Arc<Spec>>,
}

impl<R> fmt::Debug for Context<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("service", &self.name)
            .field("id", &self.id)
            .field("mode", &self.mode)
            .finish()
    }
}

impl<R: crate::bus::Operation> Context<R> {
    /// The service's name.
    pub fn name(&self) -> &ServiceName {
        &self.name
    }

    /// Which replica this incarnation is (0-based).
    pub fn replica(&self) -> u32 {
        self.id.replica
    }

    /// Counts every incarnation of the service, across replicas and restarts.
    pub fn generation(&self) -> u64 {
        self.id.generation
    }

    /// How this incarnation was started.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The spec in force now; configuration changes replace it live.
    pub fn spec(&self) -> Arc<Spec> {
        self.spec.borrow().clone()
    }

    /// The live spec channel: `changed().await` wakes when a configuration change reaches the service.
    pub fn spec_changes(&mut self) -> &mut tokio::sync::watch::Receiver<Arc<Spec>> {
        &mut self.spec
    }

    /// The message bus, for publishing and subscribing.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Cancelled when the incarnation is asked to stop, for work that does not sit in [`Context::recv`].
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// Tells the runtime this incarnation is ready. [`Context::recv`] does it on its first call.
    pub fn set_ready(&mut self) {
        if !self.ready {
            self.ready = true;
            let _ = self.reports.send(Report::Ready(self.id));
        }
    }

    /// Reports reduced function, with the reason; dependents are told.
    pub fn set_degraded(&mut self, reason: impl Into<String>) {
        self.report_health(Health::Degraded {
            reason: reason.into(),
        });
    }

    /// Reports full function again.
    pub fn set_healthy(&mut self) {
        self.report_health(Health::Healthy);
    }

    fn report_health(&mut self, health: Health) {
        if self.health != health {
            self.health = health.clone();
            let _ = self.reports.send(Report::Health(self.id, health));
        }
    }

    /// The next request, or `None` once the incarnation should stop. Control messages (liveness pings,
    /// stop, injected faults) are handled here first, so an incarnation that stops calling this is
    /// found hung by its probe. Requests whose deadline passed while queued are dead-lettered, not
    /// returned. The returned request's deadline becomes the incarnation's current one
    /// ([`crate::deadline::current`]), so the calls made while handling it inherit it; an incarnation
    /// that hands a request to another task passes the deadline along itself.
    pub async fn recv(&mut self) -> Option<R> {
        if self.hung {
            return std::future::pending().await;
        }
        self.set_ready();
        // The previous request is done with: what runs until the next one has no deadline.
        crate::deadline::set(None);
        loop {
            let mut waited = false;
            let found = {
                let queue = &self.mailbox.queue;
                let control = &mut self.control;
                // Leaves the queue's waiting receivers if this look ends (or is dropped, in a
                // `select!`) without taking a request.
                let mut waiting = Waiting {
                    queue,
                    receiver: self.receiver,
                    took: false,
                };
                let found = std::future::poll_fn(|cx| {
                    // Control overtakes data.
                    if let Some(control) = look_at_control(control, queue) {
                        return Poll::Ready(Found::Control(control));
                    }
                    match queue.poll_pop(waiting.receiver, cx) {
                        Poll::Ready(envelope) => Poll::Ready(Found::Request(envelope)),
                        // Registered: a control message sent after the look above woke nobody.
                        Poll::Pending => match look_at_control(control, queue) {
                            Some(control) => Poll::Ready(Found::Control(control)),
                            None => {
                                waited = true;
                                Poll::Pending
                            }
                        },
                    }
                })
                .await;
                waiting.took = matches!(found, Found::Request(_));
                found
            };
            match found {
                Found::Request(envelope) => {
                    let Some(envelope) = self.mailbox.unexpired(envelope) else {
                        continue;
                    };
                    // Calls made while handling it inherit what is left of its deadline.
                    crate::deadline::set(Some(envelope.deadline));
                    if !waited {
                        // Taken without waiting: it still counts against the task's budget, so a
                        // service whose queue never empties yields to the others on its worker.
                        tokio::task::consume_budget().await;
                    }
                    return Some(envelope.message);
                }
                Found::Control(control) => match control {
                    Ok(Control::Ping(answer)) => {
                        let _ = answer.send(());
                    }
                    Ok(Control::Stop) | Err(TryRecvError::Disconnected) => return None,
                    Ok(Control::Fault(Fault::Panic)) => {
                        panic!(
                            "injected fault: panic in {} (generation {})",
                            self.name, self.id.generation
                        )
                    }
                    Ok(Control::Fault(Fault::Hang)) => {
                        self.hung = true;
                        return std::future::pending().await;
                    }
                    Ok(Control::Fault(Fault::Error)) => {
                        self.injected_error.store(true, Ordering::Release);
                        return None;
                    }
                    Err(TryRecvError::Empty) => {}
                },
            }
        }
    }
}

/// A control message (or the channel's end), if there is one: `Empty` is `None`.
#[inline]
fn look_at_control<E>(
    control: &mut crate::incarnation::ControlReceiver,
    queue: &crate::bus::Queue<E>,
) -> Option<Result<Control, TryRecvError>> {
    match control.try_recv(queue.signals()) {
        Err(TryRecvError::Empty) => None,
        other => Some(other),
    }
}

/// What one look into the control channel and the mailbox found.
enum Found<E> {
    Control(Result<Control, TryRecvError>),
    Request(E),
}

/// An incarnation's place among the receivers waiting on its mailbox, for the length of one look.
struct Waiting<'a, T> {
    queue: &'a crate::bus::Queue<T>,
    receiver: Receiver,
    /// It took a request: whatever woke it was used.
    took: bool,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        if !self.took {
            // Gives up its place, or passes on a wake-up meant for a request it did not take.
            self.queue.leave(self.receiver);
        }
    }
}

impl<R: crate::bus::Operation> Context<R> {
    /// A request that is already queued, without waiting; `None` if there is none. For services
    /// that batch work (a group commit takes every write already waiting). Control messages are left
    /// for the next [`Context::recv`], which the service calls soon after.
    pub fn try_recv(&mut self) -> Option<R> {
        if self.hung {
            return None;
        }
        while let Some(envelope) = self.mailbox.queue.try_pop() {
            if let Some(envelope) = self.mailbox.unexpired(envelope) {
                return Some(envelope.message);
            }
        }
        None
    }
}

/// What the supervisor hands to a launch.
pub(crate) struct Launch {
    pub(crate) id: IncarnationId,
    pub(crate) control: crate::incarnation::ControlReceiver,
    pub(crate) reports: mpsc::UnboundedSender<Report>,
    pub(crate) stop: CancellationToken,
    pub(crate) mode: Mode,
    pub(crate) bus: Bus,
    pub(crate) spec: tokio::sync::watch::Receiver<Arc<Spec>>,
}

pub(crate) type Incarnation = Pin<Box<dyn Future<Output = Result<(), ServiceError>> + Send>>;

/// A service with its request type erased, as the supervisor holds it.
pub(crate) trait Erased: Send + Sync {
    fn launch(&self, launch: Launch) -> Incarnation;
    fn mailbox(&self) -> &dyn MailboxControl;
    /// What the service's incarnations wait on, for waking them with a control message.
    fn ready(&self) -> Arc<dyn crate::bus::Signal>;
    fn validate(&self, new: &Spec) -> Result<(), Veto>;
    fn takes_live(&self, old: &Spec, new: &Spec) -> bool;
}

pub(crate) struct Wrapped<S: Service> {
    pub(crate) service: Arc<S>,
    pub(crate) mailbox: Arc<Mailbox<S::Request>>,
}

impl<S: Service> Erased for Wrapped<S> {
    fn launch(&self, launch: Launch) -> Incarnation {
        let injected_error = Arc::new(AtomicBool::new(false));
        let cx = Context {
            id: launch.id,
            name: self.mailbox.name.clone(),
            mailbox: self.mailbox.clone(),
            control: launch.control,
            receiver: self.mailbox.queue.receiver(),
            reports: launch.reports,
            stop: launch.stop,
            injected_error: injected_error.clone(),
            hung: false,
            mode: launch.mode,
            bus: launch.bus,
            ready: false,
            health: Health::Healthy,
            spec: launch.spec,
        };
        let service = self.service.clone();
        Box::pin(async move {
            let result = crate::deadline::scope(None, service.run(cx)).await;
            if injected_error.load(Ordering::Acquire) {
                return Err(ServiceError::new("injected fault: error"));
            }
            result
        })
    }

    fn mailbox(&self) -> &dyn MailboxControl {
        &*self.mailbox
    }

    fn ready(&self) -> Arc<dyn crate::bus::Signal> {
        self.mailbox.clone()
    }

    fn validate(&self, new: &Spec) -> Result<(), Veto> {
        self.service.validate(new)
    }

    fn takes_live(&self, old: &Spec, new: &Spec) -> bool {
        self.service.takes_live(old, new)
    }
}
