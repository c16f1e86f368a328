//! Panics on the leader path, outside the two `catch_unwind`s (the I/O
//! layer's and the sink's): the leader's drop guard must poison the WAL,
//! tell every writer it owes (`Poisoned`, naming the step), let the sink's
//! turn pass and release leadership, so that no writer hangs and `stop`
//! returns.
//!
//! How they test: a probe (`Wal::probe`) stops the leader at every step and
//! reports every writer that queues, so a test drives the writer in lock
//! step: it lets writers queue while the leader is stopped, then tells the
//! leader to go on or to panic. Every wait is for a message; the timeout
//! (`HUNG`) only turns a hang, the bug under test, into a failure.

use super::*;
use crate::wal::io::StdIo;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

/// Long enough for any thread of a healthy test to be scheduled; only a
/// writer or a `stop` that never returns reaches it.
const HUNG: Duration = Duration::from_secs(30);

/// What the test tells a leader stopped at a step.
enum Go {
    On,
    Panic,
}

/// How an append ended: its outcome, or the panic its thread unwound with.
type Ending = thread::Result<Result<Lsn>>;

/// A WAL driven in lock step by the test.
struct Script {
    wal: Arc<Wal<()>>,
    points: Receiver<TestPoint>,
    go: Sender<Go>,
    /// The LSNs the sink has seen, in order.
    sunk: Arc<Mutex<Vec<Lsn>>>,
    /// The step the leader is held at, if it is.
    held: std::cell::Cell<Option<LeaderStep>>,
}

impl Script {
    fn new(dir: &Path) -> Script {
        let sunk = Arc::new(Mutex::new(Vec::new()));
        let seen = sunk.clone();
        let sink: Sink<()> = Box::new(move |lsn_first, items| {
            lock(&seen).extend(lsn_first..lsn_first + items.len() as u64);
        });
        let options = WalOptions {
            dir: dir.join("wal"),
            segment_bytes: 1 << 20,
            store_id: StoreId::new_random(),
            epoch: 1,
            max_record_bytes: 1024,
        };
        let wal = Arc::new(Wal::start(Arc::new(StdIo), options, 1, 1, sink).unwrap());
        let (points_tx, points) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let go_rx = Mutex::new(go_rx);
        let probe: Probe = Box::new(move |point| {
            // Sends fail only once the test has ended; the writer then runs
            // on unobserved.
            let _ = points_tx.send(point);
            if let TestPoint::Leader(step) = point {
                if let Ok(Go::Panic) = lock(&go_rx).recv_timeout(HUNG) {
                    panic!("injected panic while {step:?}");
                }
            }
        });
        assert!(wal.probe.set(probe).is_ok());
        Script { wal, points, go, sunk, held: std::cell::Cell::new(None) }
    }

    /// Starts a writer thread appending one record.
    fn append(&self) -> Receiver<Ending> {
        let (ending_tx, ending) = mpsc::channel();
        let wal = self.wal.clone();
        thread::spawn(move || {
            let ending = panic::catch_unwind(AssertUnwindSafe(|| wal.append(vec![7; 40], ())));
            ending_tx.send(ending).unwrap();
        });
        ending
    }

    /// Starts `count` writers and waits until each has queued.
    fn queue(&self, count: usize) -> Vec<Receiver<Ending>> {
        let writers: Vec<_> = (0..count).map(|_| self.append()).collect();
        for _ in 0..count {
            self.expect(TestPoint::Queued);
        }
        writers
    }

    fn expect(&self, point: TestPoint) {
        let next = self.points.recv_timeout(HUNG).expect("the writer stopped moving");
        assert_eq!(next, point);
    }

    /// Waits for the leader to reach `step`, and holds it there (at once,
    /// if it is held there already).
    fn reach(&self, step: LeaderStep) {
        if self.held.get() != Some(step) {
            self.expect(TestPoint::Leader(step));
            self.held.set(Some(step));
        }
    }

    /// Lets the leader held at a step go on.
    fn go_on(&self) {
        assert!(self.held.take().is_some(), "the leader is held");
        self.go.send(Go::On).unwrap();
    }

    /// Lets the leader go on through each step in turn.
    fn pass(&self, steps: &[LeaderStep]) {
        for &step in steps {
            self.reach(step);
            self.go_on();
        }
    }

    /// Makes the leader panic at `step` once it is there.
    fn panic_at(&self, step: LeaderStep) {
        self.reach(step);
        self.held.set(None);
        self.go.send(Go::Panic).unwrap();
    }

    /// Starts a leader that writes its own record alone while `group`
    /// writers queue behind it, then holds it before writing their group
    /// while `behind` more queue (so it will keep leading after that
    /// group). Returns the leader and the writers, in the order they queued.
    fn lead_one_then_hold(
        &self,
        group: usize,
        behind: usize,
    ) -> (Receiver<Ending>, Vec<Receiver<Ending>>) {
        use LeaderStep::*;
        let leader = self.append();
        self.expect(TestPoint::Queued);
        self.pass(&[Gathering]);
        self.reach(Writing);
        let mut writers = self.queue(group);
        self.pass(&[Writing, Recording, Applying, Telling]);
        self.reach(Writing);
        writers.extend(self.queue(behind));
        (leader, writers)
    }

    fn sunk(&self) -> Vec<Lsn> {
        lock(&self.sunk).clone()
    }

    /// `stop`, which must return.
    fn stop(&self) {
        let (done_tx, done) = mpsc::channel();
        let wal = self.wal.clone();
        thread::spawn(move || {
            wal.stop();
            done_tx.send(()).unwrap();
        });
        done.recv_timeout(HUNG).expect("stop returned");
    }
}

fn ending(writer: &Receiver<Ending>) -> Ending {
    writer.recv_timeout(HUNG).expect("every writer returns")
}

/// The leader's append unwound with the panic injected at `step`.
fn assert_unwound_at(leader: &Receiver<Ending>, step: LeaderStep) {
    match ending(leader) {
        Err(payload) => {
            assert_eq!(panic_message(&*payload), format!("injected panic while {step:?}"))
        }
        Ok(outcome) => panic!("the leader returned {outcome:?} instead of unwinding"),
    }
}

/// `outcome` is `Poisoned` by the guard of a leader that panicked at `step`.
fn assert_poisoned_at(outcome: Result<Lsn>, step: LeaderStep) {
    match outcome {
        Err(Error::Poisoned { cause }) => match &*cause {
            Error::Panicked { what, message } => {
                assert_eq!(*what, step.doing());
                assert_eq!(message, UNWOUND_MESSAGE);
            }
            other => panic!("poisoned by {other:?}"),
        },
        other => panic!("expected Poisoned, got {other:?}"),
    }
}

/// After the panic: every later append is refused, and `stop` returns.
fn assert_latched_at(script: &Script, step: LeaderStep) {
    assert_poisoned_at(script.wal.append(vec![1; 40], ()), step);
    script.stop();
}

#[test]
fn a_panic_at_each_step_of_a_group_fails_its_writers_and_the_queue() {
    // The leader writes its own record, then holds before the group of
    // seven writers that queued behind it; an eighth queues meanwhile, so
    // the leader keeps leading. It panics at one step of the seven's group.
    // The table says what the sink has seen and what the guard must leave,
    // step by step: before the write nothing is durable; once it is, the
    // records are durable but not in the sink (sink_failed) until the sink
    // has them; once LSNs are handed out, the sink's turn must pass or
    // `stop` would wait for it for ever.
    use LeaderStep::*;
    let cases: [(LeaderStep, Vec<Lsn>, bool, Lsn); 4] = [
        (Writing, vec![1], false, 2),
        (Recording, vec![1], true, 2),
        (Applying, vec![1], true, 9),
        (Telling, (1..=8).collect(), false, 9),
    ];
    for (step, sunk, sink_failed, lsn_next) in cases {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(dir.path());
        let (leader, writers) = script.lead_one_then_hold(7, 1);
        let group_steps = [Writing, Recording, Applying, Telling];
        let before = group_steps.iter().position(|&s| s == step).unwrap();
        script.pass(&group_steps[..before]);
        script.panic_at(step);
        assert_unwound_at(&leader, step);
        for writer in &writers {
            assert_poisoned_at(ending(writer).unwrap(), step);
        }
        assert_eq!(script.sunk(), sunk, "{step:?}");
        assert_eq!(script.wal.sink_failed(), sink_failed, "{step:?}");
        assert_eq!(script.wal.lsn_next(), lsn_next, "{step:?}");
        assert_latched_at(&script, step);
    }
}

#[test]
fn a_panic_while_passing_leadership_lets_the_turn_pass_and_fails_the_heir() {
    // Eight groups of one: while each is held before its write, the next
    // writer queues, so the leader leads all eight and must then pass
    // leadership to the ninth. It panics there, before choosing. The
    // eighth group is durable, its LSN handed out, its turn at the sink
    // not taken: the guard must pass the turn (else `stop` hangs), mark
    // the sink as missing it, fail its writer and the queued ninth, and
    // leave the seven groups before acknowledged.
    use LeaderStep::*;
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(dir.path());
    let leader = script.append();
    script.expect(TestPoint::Queued);
    script.pass(&[Gathering]);
    let mut writers = Vec::new();
    for group in 1..=LEAD_GROUPS_MAX {
        script.reach(Writing);
        writers.extend(script.queue(1));
        script.go_on();
        script.pass(&[Recording]);
        if group < LEAD_GROUPS_MAX {
            script.pass(&[Applying, Telling]);
        }
    }
    script.panic_at(PassingLeadership);
    assert_unwound_at(&leader, PassingLeadership);
    let ninth = writers.pop().unwrap();
    let eighth = writers.pop().unwrap();
    for (index, writer) in writers.iter().enumerate() {
        assert_eq!(ending(writer).unwrap().unwrap(), index as Lsn + 2);
    }
    assert_poisoned_at(ending(&ninth).unwrap(), PassingLeadership);
    assert_poisoned_at(ending(&eighth).unwrap(), PassingLeadership);
    assert_eq!(script.sunk(), (1..=7).collect::<Vec<Lsn>>());
    assert!(script.wal.sink_failed(), "LSN 8 is durable and not in the sink");
    assert_eq!(script.wal.lsn_next(), 9);
    assert_latched_at(&script, PassingLeadership);
}

#[test]
fn a_panic_while_gathering_releases_leadership() {
    // The first writer finds the log idle and gathers, holding the state
    // lock; three more writers start meanwhile and block on that lock. The
    // leader panics. Each of the three then either queues before the guard
    // poisons the WAL (the guard fails the queue) or finds it poisoned; both
    // end in the same error, and no one is left waiting for a leader.
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(dir.path());
    let leader = script.append();
    script.expect(TestPoint::Queued);
    script.reach(LeaderStep::Gathering);
    let writers: Vec<_> = (0..3).map(|_| script.append()).collect();
    script.panic_at(LeaderStep::Gathering);
    assert_unwound_at(&leader, LeaderStep::Gathering);
    for writer in &writers {
        assert_poisoned_at(ending(writer).unwrap(), LeaderStep::Gathering);
    }
    assert_eq!(script.sunk(), Vec::<Lsn>::new());
    assert!(!script.wal.sink_failed());
    assert_eq!(script.wal.lsn_next(), 1);
    assert_latched_at(&script, LeaderStep::Gathering);
}

#[test]
fn a_panic_in_a_truncation_fold_fails_the_writers_queued_behind_it() {
    // `truncate_with` holds leadership while its fold runs; three writers
    // queue behind it. The fold panics: the guard must fail the three and
    // release leadership (before, they and `stop` waited for ever), and
    // the panic reaches `truncate_with`'s caller.
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(dir.path());
    let (folding_tx, folding) = mpsc::channel();
    let (fail_tx, fail) = mpsc::channel::<()>();
    let wal = script.wal.clone();
    let truncation = thread::spawn(move || {
        wal.truncate_with(|| {
            folding_tx.send(()).unwrap();
            fail.recv_timeout(HUNG).unwrap();
            panic!("injected panic in the fold");
        })
    });
    folding.recv_timeout(HUNG).unwrap();
    let writers = script.queue(3);
    fail_tx.send(()).unwrap();
    let payload = truncation.join().expect_err("the fold's panic reaches the caller");
    assert_eq!(panic_message(&*payload), "injected panic in the fold");
    for writer in &writers {
        assert_poisoned_at(ending(writer).unwrap(), LeaderStep::Truncating);
    }
    assert_latched_at(&script, LeaderStep::Truncating);
}

#[test]
fn a_panic_in_an_heirs_first_group_fails_the_rest_of_that_group() {
    // Four writers queue while `truncate_with` holds leadership; it then
    // hands leadership to the first, which leads the four as one group
    // (an heir does not gather) and panics before writing it. The heir's
    // own waiter is first in the group, and its thread unwinds: were it
    // told an outcome too, the relay would count on it to wake two of the
    // others, who would then wait for ever.
    use LeaderStep::*;
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(dir.path());
    let (folding_tx, folding) = mpsc::channel();
    let (fold_tx, fold) = mpsc::channel::<()>();
    let wal = script.wal.clone();
    let truncation = thread::spawn(move || {
        wal.truncate_with(|| {
            folding_tx.send(()).unwrap();
            fold.recv_timeout(HUNG).unwrap();
            Ok(())
        })
    });
    folding.recv_timeout(HUNG).unwrap();
    // One at a time, so the first in `writers` is the first in the queue.
    let mut writers: Vec<_> = (0..4).flat_map(|_| script.queue(1)).collect();
    fold_tx.send(()).unwrap();
    script.pass(&[PassingLeadership]);
    script.panic_at(Writing);
    assert_eq!(truncation.join().unwrap().unwrap(), 1, "the first segment was removed");
    let heir = writers.remove(0);
    assert_unwound_at(&heir, Writing);
    for writer in &writers {
        assert_poisoned_at(ending(writer).unwrap(), Writing);
    }
    assert_eq!(script.sunk(), Vec::<Lsn>::new());
    assert_eq!(script.wal.lsn_next(), 1);
    assert_latched_at(&script, Writing);
}
