//! Workers: the threads that run a job's operators, and the job's side of
//! their queues.
//!
//! Each stage has one operator instance per subtask. A subtask's instances
//! run on a thread each when the machine has a core for every one, so the
//! stages of a subtask pipeline (the guest maps batch k+1 while the state
//! takes batch k); on fewer cores they share the subtask's thread, which
//! then serves the later stage first. Either way a busy guest pins only its
//! own subtask's thread: the others go on with the batches behind.
//!
//! The job submits items — a batch's records, a batch's rows from every
//! upstream subtask, a barrier — to a stage, and collects each stage's
//! results in submission order, from every subtask at once. Work submitted
//! before a failure is abandoned by bumping the generation: instances skip
//! what they have not started.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, TryRecvError, bounded};

use crate::checkpoint::Snapshot;
use crate::dataflow::message::{Barrier, Clock, SourceBatch};
use crate::dataflow::operator::{Input, Operator, OperatorSnapshot, Output};
use crate::fault::{Fault, TaskFailure};

/// Batches the first stage may be given before the oldest one is
/// collected: a subtask whose guest is slow or spinning holds up the
/// output, not the other subtasks' guests.
pub const MAP_AHEAD: usize = 4;

/// How long a thread with idle work waits for a command before it does it.
const IDLE: Duration = Duration::from_micros(200);

/// An item of the stream, as the stage it is submitted to sees it.
#[derive(Clone)]
pub enum Item {
    /// A batch's records: each subtask of the stage takes its slice.
    Records(Arc<SourceBatch>, Clock),
    /// A batch's output from every subtask of the stage before.
    Rows(Arc<SourceBatch>, Arc<Vec<Output>>, Clock),
    /// A barrier: each instance snapshots its state.
    Barrier(Barrier),
}

/// What one instance is sent.
enum Command {
    Process { generation: u64, item: Work },
    Reset,
    Recycle(Vec<u8>),
}

/// An item as one instance gets it.
enum Work {
    Records(Arc<SourceBatch>, Range<usize>, Clock),
    Rows(Arc<SourceBatch>, Arc<Vec<Output>>, Clock),
    Barrier,
}

/// One instance's answer for one item; `Stale` for an abandoned one.
enum Reply {
    Output(Result<Output, TaskFailure>),
    Snapshot(OperatorSnapshot),
    Stale,
}

/// What every subtask of a stage gave for one item.
pub enum Collected {
    /// The outputs, by subtask, or the earliest failure.
    Outputs(Result<Vec<Output>, TaskFailure>),
    /// Every subtask's state at a barrier.
    Snapshots(Result<Vec<OperatorSnapshot>, TaskFailure>),
}

/// Counters of one operator instance, kept by its thread.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records (first stage) or rows (later stages) taken in.
    pub taken: AtomicU64,
    /// Rows or lines emitted.
    pub emitted: AtomicU64,
    /// Bytes of rows or lines emitted.
    pub bytes: AtomicU64,
    /// Time spent processing, in nanoseconds.
    pub busy_ns: AtomicU64,
    /// Batches processed.
    pub batches: AtomicU64,
}

/// One operator instance on its thread.
struct Instance {
    op: Box<dyn Operator>,
    /// Its stage's generation: items of an older one are skipped.
    current: Arc<AtomicU64>,
    commands: Receiver<Command>,
    replies: Sender<Reply>,
    counters: Arc<Counters>,
}

impl Instance {
    /// Runs one command; `false` when the job is gone.
    fn run(&mut self, command: Command) -> bool {
        let (generation, work) = match command {
            Command::Process { generation, item } => (generation, item),
            Command::Reset => {
                self.op.reset();
                return true;
            }
            Command::Recycle(arena) => {
                self.op.recycle(arena);
                return true;
            }
        };
        let reply = if generation != self.current.load(Ordering::Acquire) {
            Reply::Stale
        } else {
            match work {
                Work::Records(batch, range, clock) => self.process(Input::Records {
                    batch: &batch,
                    range,
                    clock,
                }),
                Work::Rows(batch, parts, clock) => self.process(Input::Rows {
                    batch: &batch,
                    parts: &parts,
                    clock,
                }),
                Work::Barrier => Reply::Snapshot(self.op.snapshot()),
            }
        };
        self.replies.send(reply).is_ok()
    }

    fn process(&mut self, input: Input<'_>) -> Reply {
        let started = Instant::now();
        let result = self.op.process(input);
        let c = &self.counters;
        c.busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        c.batches.fetch_add(1, Ordering::Relaxed);
        if let Ok(out) = &result {
            let routed: usize = out.routes.iter().map(Vec::len).sum();
            let emitted = routed + out.lines.marks.len();
            let bytes = out.rows.len() + out.lines.bytes.len();
            c.taken.fetch_add(out.taken, Ordering::Relaxed);
            c.emitted.fetch_add(emitted as u64, Ordering::Relaxed);
            c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        Reply::Output(result)
    }
}

/// Serves the instances of one thread, the first in the list first, until
/// the job is gone. Does idle work only after [`IDLE`] with nothing to do.
/// A thread of the first stage alone waits with a plain receive, which
/// spins a little before it sleeps: the guest, which sets the pace, starts
/// on the next batch sooner. Any other thread sleeps at once (a `Select`),
/// so that waiting does not take a core from the guest.
fn serve(mut instances: Vec<Instance>, first_stage: bool) {
    if instances.len() == 1 && first_stage {
        return serve_one(instances.remove(0));
    }
    let receivers: Vec<Receiver<Command>> = instances.iter().map(|i| i.commands.clone()).collect();
    let mut select = Select::new();
    for r in &receivers {
        select.recv(r);
    }
    let mut waited = false;
    loop {
        let mut next = None;
        for (n, i) in instances.iter().enumerate() {
            match i.commands.try_recv() {
                Ok(command) => {
                    next = Some((n, command));
                    break;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if let Some((n, command)) = next {
            waited = false;
            if !instances[n].run(command) {
                return;
            }
            continue;
        }
        match instances.iter_mut().find(|i| i.op.has_idle_work()) {
            None => {
                select.ready();
            }
            Some(i) if waited => i.op.idle(),
            Some(_) => {
                waited = true;
                let _ = select.ready_timeout(IDLE);
            }
        }
    }
}

/// [`serve`] for a thread of one first-stage instance.
fn serve_one(mut instance: Instance) {
    loop {
        let command = if instance.op.has_idle_work() {
            match instance.commands.recv_timeout(IDLE) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => {
                    instance.op.idle();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match instance.commands.recv() {
                Ok(command) => command,
                Err(_) => return,
            }
        };
        if !instance.run(command) {
            return;
        }
    }
}

/// The job's side of one instance's queues.
struct Link {
    commands: Sender<Command>,
    replies: Receiver<Reply>,
}

/// The job's side of one stage.
struct Stage {
    links: Vec<Link>,
    /// Bumped to abandon every item submitted to the stage.
    generation: Arc<AtomicU64>,
    /// Items submitted and not yet collected.
    owed: usize,
    /// The oldest owed item's replies so far, by subtask.
    parts: Vec<Option<Reply>>,
    stateful: bool,
    atomic: bool,
    counters: Vec<Arc<Counters>>,
}

/// A job's operators, by stage and subtask, on their threads.
pub struct Workers {
    stages: Vec<Stage>,
    /// Round robin for recycled arenas.
    next_spare: usize,
}

fn lost(index: usize) -> TaskFailure {
    TaskFailure::of_subtask(
        index as u32,
        "the subtask's thread stopped",
        Fault::Environment,
    )
}

/// Whether a subtask's instances share one thread: when the machine has
/// fewer cores than a thread per instance would make threads. A thread
/// each pipelines the stages, which is worth a core each; on fewer cores
/// they only take turns, and pay for every hand-off.
pub fn shares_threads(stages: usize, parallelism: usize) -> bool {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    stages * parallelism > cores
}

/// Of two failures, the one to report: the earlier record, and one with a
/// record over one without.
fn earlier(old: Option<TaskFailure>, new: TaskFailure) -> Option<TaskFailure> {
    Some(match old {
        None => new,
        Some(old) => match (old.seq, new.seq) {
            (Some(a), Some(b)) if b < a => new,
            (None, Some(_)) => new,
            _ => old,
        },
    })
}

impl Workers {
    /// Starts the operators: `stages[s][i]` is stage `s`'s instance for
    /// subtask `i` (every stage has the same parallelism). The first stage
    /// takes batches' records; each later one the rows of the one before.
    pub fn start(stages: Vec<Vec<Box<dyn Operator>>>) -> Result<Self, TaskFailure> {
        let parallelism = stages.first().map_or(0, Vec::len);
        let share = shares_threads(stages.len(), parallelism);
        let mut threads: Vec<Vec<Instance>> = (0..parallelism).map(|_| Vec::new()).collect();
        let mut links = Vec::new();
        for (s, ops) in stages.into_iter().enumerate() {
            let depth = if s == 0 { MAP_AHEAD + 2 } else { 2 };
            let generation = Arc::new(AtomicU64::new(0));
            let mut stage = Stage {
                links: Vec::new(),
                generation: generation.clone(),
                owed: 0,
                parts: Vec::new(),
                stateful: ops.iter().any(|o| o.stateful()),
                atomic: ops.iter().all(|o| o.atomic()),
                counters: Vec::new(),
            };
            for (i, op) in ops.into_iter().enumerate() {
                // Commands never block the job (it bounds what it owes);
                // replies are bounded by what it owes.
                let (commands, commands_rx) = bounded(64);
                let (replies_tx, replies) = bounded(depth);
                let counters = Arc::new(Counters::default());
                stage.links.push(Link { commands, replies });
                stage.parts.push(None);
                stage.counters.push(counters.clone());
                // Later stages first: their work holds up the output.
                threads[i].insert(
                    0,
                    Instance {
                        op,
                        current: generation.clone(),
                        commands: commands_rx,
                        replies: replies_tx,
                        counters,
                    },
                );
            }
            links.push(stage);
        }
        for (i, instances) in threads.into_iter().enumerate() {
            if share {
                spawn(format!("sluice-task-{i}"), i, instances, false)?;
            } else {
                let count = instances.len();
                for (n, instance) in instances.into_iter().enumerate() {
                    let stage = count - 1 - n;
                    spawn(
                        format!("sluice-s{stage}-{i}"),
                        i,
                        vec![instance],
                        stage == 0,
                    )?;
                }
            }
        }
        tracing::debug!(
            "{parallelism} subtask(s), {} stage(s){}",
            links.len(),
            if share {
                "; each subtask's stages share one thread"
            } else {
                ""
            }
        );
        Ok(Workers {
            stages: links,
            next_spare: 0,
        })
    }

    /// Stages.
    pub fn stages(&self) -> usize {
        self.stages.len()
    }

    /// Subtasks.
    pub fn parallelism(&self) -> usize {
        self.stages.first().map_or(0, |s| s.links.len())
    }

    /// Whether stage `stage` keeps state.
    pub fn stateful(&self, stage: usize) -> bool {
        self.stages.get(stage).is_some_and(|s| s.stateful)
    }

    /// Whether a batch that fails in `stage` leaves its state as it was.
    pub fn atomic(&self, stage: usize) -> bool {
        self.stages.get(stage).is_some_and(|s| s.atomic)
    }

    /// Items submitted to `stage` and not yet collected.
    pub fn owed(&self, stage: usize) -> usize {
        self.stages.get(stage).map_or(0, |s| s.owed)
    }

    /// The counters of every instance, by stage and subtask.
    pub fn counters(&self) -> Vec<Vec<Arc<Counters>>> {
        self.stages.iter().map(|s| s.counters.clone()).collect()
    }

    /// Submits an item to every subtask of `stage`. Collect the result with
    /// [`Workers::collect`]; the first stage may owe at most [`MAP_AHEAD`]
    /// batches (and the barriers among them), a later one one item.
    pub fn submit(&mut self, stage: usize, item: Item) -> Result<(), TaskFailure> {
        let Some(st) = self.stages.get_mut(stage) else {
            return Err(TaskFailure::of_subtask(0, "no such stage", Fault::Host));
        };
        let generation = st.generation.load(Ordering::Acquire);
        let p = st.links.len();
        for (i, link) in st.links.iter().enumerate() {
            let work = match &item {
                Item::Records(batch, clock) => {
                    let n = batch.records.len();
                    Work::Records(batch.clone(), (n * i / p)..(n * (i + 1) / p), *clock)
                }
                Item::Rows(batch, parts, clock) => Work::Rows(batch.clone(), parts.clone(), *clock),
                Item::Barrier(_) => Work::Barrier,
            };
            let command = Command::Process {
                generation,
                item: work,
            };
            link.commands.send(command).map_err(|_| lost(i))?;
        }
        st.owed += 1;
        Ok(())
    }

    /// The oldest owed item of `stage`, once every subtask answered:
    /// `None` when it is not done yet (and `block` is false) or when
    /// nothing is owed.
    pub fn collect(&mut self, stage: usize, block: bool) -> Option<Collected> {
        let st = self.stages.get_mut(stage)?;
        if st.owed == 0 {
            return None;
        }
        for (i, link) in st.links.iter().enumerate() {
            if st.parts[i].is_some() {
                continue;
            }
            let reply = if block {
                link.replies.recv().ok()
            } else {
                match link.replies.try_recv() {
                    Ok(reply) => Some(reply),
                    Err(TryRecvError::Empty) => return None,
                    Err(TryRecvError::Disconnected) => None,
                }
            };
            // A stale reply cannot come here: `abandon` drains those.
            st.parts[i] = Some(reply.unwrap_or(Reply::Stale));
        }
        st.owed -= 1;
        let parts: Vec<(usize, Reply)> = st
            .parts
            .iter_mut()
            .enumerate()
            .filter_map(|(i, p)| p.take().map(|r| (i, r)))
            .collect();
        Some(gather(parts))
    }

    /// Waits until a reply the first stage's oldest item still needs
    /// arrives, or `other` has a message, or `timeout` passes.
    pub fn wait<T>(&self, other: &Receiver<T>, timeout: Duration) {
        let mut select = Select::new();
        select.recv(other);
        if let Some(st) = self.stages.first()
            && st.owed > 0
        {
            for (i, link) in st.links.iter().enumerate() {
                if st.parts[i].is_none() {
                    select.recv(&link.replies);
                }
            }
        }
        let _ = select.ready_timeout(timeout);
    }

    /// Abandons every submitted item (instances skip the ones they have not
    /// started) and resets every instance (a fresh guest instance next).
    pub fn abandon(&mut self) {
        self.abandon_upstream(self.stages.len());
    }

    /// Abandons the items of the stages before `stage` and resets their
    /// instances; the later stages go on with theirs.
    pub fn abandon_upstream(&mut self, stage: usize) {
        for st in self.stages.iter_mut().take(stage) {
            st.generation.fetch_add(1, Ordering::AcqRel);
            for (i, link) in st.links.iter().enumerate() {
                let owed = st.owed - usize::from(st.parts[i].is_some());
                for _ in 0..owed {
                    if link.replies.recv().is_err() {
                        break;
                    }
                }
                let _ = link.commands.send(Command::Reset);
            }
            st.parts.iter_mut().for_each(|p| *p = None);
            st.owed = 0;
        }
    }

    /// Hands the key groups of a snapshot the job no longer needs back to
    /// the stateful instances, to copy groups into after the next snapshot.
    pub fn recycle(&mut self, snapshot: Snapshot) {
        let Some(st) = self.stages.iter().find(|s| s.stateful) else {
            return;
        };
        for group in snapshot.subtasks.into_iter().flatten() {
            if let Ok(arena) = Arc::try_unwrap(group.bytes) {
                let i = self.next_spare % st.links.len().max(1);
                self.next_spare += 1;
                let _ = st.links[i].commands.send(Command::Recycle(arena));
            }
        }
    }
}

/// Puts every subtask's reply for one item together.
fn gather(parts: Vec<(usize, Reply)>) -> Collected {
    let mut outputs = Vec::with_capacity(parts.len());
    let mut snapshots = Vec::new();
    let mut failure: Option<TaskFailure> = None;
    for (i, reply) in parts {
        match reply {
            Reply::Output(Ok(out)) => outputs.push(out),
            Reply::Output(Err(f)) => failure = earlier(failure, f),
            Reply::Snapshot(s) => snapshots.push(s),
            Reply::Stale => failure = earlier(failure, lost(i)),
        }
    }
    if !snapshots.is_empty() {
        return Collected::Snapshots(match failure {
            Some(f) => Err(f),
            None => Ok(snapshots),
        });
    }
    Collected::Outputs(match failure {
        Some(f) => Err(f),
        None => Ok(outputs),
    })
}

fn spawn(
    name: String,
    index: usize,
    instances: Vec<Instance>,
    first_stage: bool,
) -> Result<(), TaskFailure> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || serve(instances, first_stage))
        .map(|_| ())
        .map_err(|e| {
            TaskFailure::of_subtask(
                index as u32,
                format!("cannot start the subtask's thread: {e}"),
                Fault::Environment,
            )
        })
}
