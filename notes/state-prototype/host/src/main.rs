//! Prototype for sluice:stream@0.2.0 keyed state: per-record host imports
//! (A) against state shipped with the batch (B), a host-side windowed
//! aggregate (C) and native Rust, in one process, interleaved.
//!
//! `proto-state [--runs N] [--batches N] [--batch N] [--keys N] [--zipf S]
//!              [--window N] [--trap-trials N] [--guests DIR]`

mod designs;
mod state;
mod trap;
mod wasm;
mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use designs::Split;
use wasm::{Runtime, WriteMode};
use workload::{Dist, Workload};

/// The host's keyed state: encoded key -> encoded value state.
pub use state::StateMap;
type NativeMap = hashbrown::HashMap<Vec<u8>, (u64, i64)>;

#[inline]
pub fn u32_at(b: &[u8], p: usize) -> usize {
    u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// An order-independent digest of a state map.
pub fn digest(m: &StateMap) -> u64 {
    m.iter()
        .map(|(k, v)| fnv(k) ^ fnv(v).rotate_left(17))
        .fold(m.len() as u64, u64::wrapping_add)
}

fn native_as_bytes(m: &NativeMap) -> StateMap {
    let mut out = StateMap::default();
    for (k, &(c, s)) in m {
        let mut v = c.to_le_bytes().to_vec();
        v.extend_from_slice(&s.to_le_bytes());
        out.put(k, &v);
    }
    out
}

/// An order-independent digest of `out*` (C and its baseline emit a
/// window's keys in hash-map order).
fn out_digest(acc: &mut (u64, u64), out: &[u8]) {
    let mut p = 0;
    while p < out.len() {
        let klen = u32_at(out, p);
        let rec = &out[p..p + 20 + klen];
        acc.0 = acc.0.wrapping_add(fnv(rec));
        acc.1 += 1;
        p += 20 + klen;
    }
}

struct Args {
    runs: usize,
    batches: usize,
    batch: usize,
    keys: usize,
    zipf: f64,
    window: usize,
    trap_trials: usize,
    guests: String,
    /// Only these designs (Debug names, comma-separated); skips checks and traps.
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        runs: 7,
        batches: 1024,
        batch: 1024,
        keys: 100_000,
        zipf: 1.0,
        window: 64,
        trap_trials: 30,
        only: None,
        guests: concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/guest").into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => a.runs = v.parse().unwrap(),
            "--batches" => a.batches = v.parse().unwrap(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--keys" => a.keys = v.parse().unwrap(),
            "--zipf" => a.zipf = v.parse().unwrap(),
            "--window" => a.window = v.parse().unwrap(),
            "--trap-trials" => a.trap_trials = v.parse().unwrap(),
            "--guests" => a.guests = v,
            "--only" => a.only = Some(v),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Design {
    Native,
    Stateless,
    AOverlay,
    AUndo,
    AAt,
    AReplayOverlay,
    AReplayUndo,
    B,
    NativeWindow,
    C,
}

impl Design {
    const ALL: [Design; 10] = [
        Design::Native,
        Design::Stateless,
        Design::AOverlay,
        Design::AUndo,
        Design::AAt,
        Design::AReplayOverlay,
        Design::AReplayUndo,
        Design::B,
        Design::NativeWindow,
        Design::C,
    ];
    fn name(self) -> &'static str {
        match self {
            Design::Native => "native Rust, HashMap",
            Design::Stateless => "floor: same guest call, no state (passthrough)",
            Design::AOverlay => "A: get/put imports, write overlay",
            Design::AUndo => "A: get/put imports, undo log",
            Design::AAt => "A, lower bound: implicit key, typed value, undo log",
            Design::AReplayOverlay => "A's host map work alone (overlay), no wasm",
            Design::AReplayUndo => "A's host map work alone (undo log), no wasm",
            Design::B => "B: state shipped with the batch",
            Design::NativeWindow => "native Rust, tumbling window",
            Design::C => "C: host window, guest add/result",
        }
    }
    fn baseline(self) -> Design {
        match self {
            Design::NativeWindow | Design::C => Design::NativeWindow,
            _ => Design::Native,
        }
    }
}

struct Env<'a> {
    rt: &'a Runtime,
    a: wasmtime::component::Component,
    b: wasmtime::component::Component,
    c: wasmtime::component::Component,
    template: StateMap,
    native_template: NativeMap,
    window: usize,
}

/// One timed run of `d` over `w`. Returns the split, the output bytes and
/// the final state's digest (None where the design keeps no lasting state).
fn run(env: &Env, d: Design, w: &Workload) -> anyhow::Result<(Split, usize)> {
    let mut bytes = 0usize;
    let mut sink = |o: &[u8]| bytes += o.len();
    let s = match d {
        Design::Native => {
            let mut m = env.native_template.clone();
            designs::native(&w.batches, &mut m, &mut sink)
        }
        Design::NativeWindow => {
            let mut m = NativeMap::default();
            designs::native_window(&w.batches, env.window, &mut m, &mut sink)
        }
        Design::Stateless => designs::passthrough(env.rt, &env.a, &w.batches, &mut sink)?,
        Design::AOverlay | Design::AUndo => {
            let mode = if d == Design::AOverlay { WriteMode::Overlay } else { WriteMode::Undo };
            designs::design_a(env.rt, &env.a, mode, &w.batches, env.template.clone(), &mut sink)?.1
        }
        Design::AAt => designs::design_a_at(env.rt, &env.a, WriteMode::Undo, &w.batches, env.template.clone(), &mut sink)?.1,
        Design::AReplayOverlay | Design::AReplayUndo => {
            let mode = if d == Design::AReplayOverlay { WriteMode::Overlay } else { WriteMode::Undo };
            let t = designs::a_host_replay(&w.batches, mode, env.template.clone()).1;
            Split { total: t, ..Split::default() }
        }
        Design::B => designs::design_b(env.rt, &env.b, &w.batches, env.template.clone(), &mut sink)?.1,
        Design::C => designs::design_c(env.rt, &env.c, &w.batches, env.window, &mut sink)?,
    };
    Ok((s, bytes))
}

/// Every design must compute the same thing: same output bytes, same state.
fn check(env: &Env, w: &Workload) -> anyhow::Result<()> {
    let mut want_out = Vec::new();
    let mut m = env.native_template.clone();
    designs::native(&w.batches, &mut m, &mut |o: &[u8]| want_out.extend_from_slice(o));
    let want_state = digest(&native_as_bytes(&m));
    for mode in [WriteMode::Overlay, WriteMode::Undo] {
        let mut got = Vec::new();
        let (st, _) = designs::design_a(env.rt, &env.a, mode, &w.batches, env.template.clone(), &mut |o: &[u8]| {
            got.extend_from_slice(o)
        })?;
        anyhow::ensure!(got == want_out, "A {mode:?}: output differs from native");
        anyhow::ensure!(digest(&st) == want_state, "A {mode:?}: state differs from native");
        let mut got = Vec::new();
        let (st, _) = designs::design_a_at(env.rt, &env.a, mode, &w.batches, env.template.clone(), &mut |o: &[u8]| {
            got.extend_from_slice(o)
        })?;
        anyhow::ensure!(got == want_out, "A-at {mode:?}: output differs from native");
        anyhow::ensure!(digest(&st) == want_state, "A-at {mode:?}: state differs from native");
        let (st, _) = designs::a_host_replay(&w.batches, mode, env.template.clone());
        anyhow::ensure!(digest(&st) == want_state, "A replay {mode:?}: state differs");
    }
    let mut got = Vec::new();
    let (st, _) = designs::design_b(env.rt, &env.b, &w.batches, env.template.clone(), &mut |o: &[u8]| {
        got.extend_from_slice(o)
    })?;
    anyhow::ensure!(got == want_out, "B: output differs from native");
    anyhow::ensure!(digest(&st) == want_state, "B: state differs from native");
    let (mut nw, mut cw) = ((0, 0), (0, 0));
    let mut m = NativeMap::default();
    designs::native_window(&w.batches, env.window, &mut m, &mut |o: &[u8]| out_digest(&mut nw, o));
    designs::design_c(env.rt, &env.c, &w.batches, env.window, &mut |o: &[u8]| out_digest(&mut cw, o))?;
    anyhow::ensure!(nw == cw, "C: window output differs from native");
    designs::check_merge(env.rt, &env.c)?;
    eprintln!(
        "check {}: A, B, C agree with native ({} output bytes, {} window rows)",
        w.dist.name(),
        want_out.len(),
        nw.1
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn main() -> anyhow::Result<()> {
    let a = args();
    let rt = Runtime::new()?;
    let load = |n: &str| rt.load(&format!("{}/guest_{n}.wasm", a.guests));
    let mut template = StateMap::default();
    let mut native_template = NativeMap::default();
    for i in 0..a.keys {
        template.put(&workload::key_name(i), &[0u8; 16]);
        native_template.insert(workload::key_name(i), (0, 0));
    }
    let env = Env {
        rt: &rt,
        a: load("a")?,
        b: load("b")?,
        c: load("c")?,
        template,
        native_template,
        window: a.window,
    };
    let workloads = [
        workload::generate(Dist::Uniform, a.keys, a.batch, a.batches, 1),
        workload::generate(Dist::Zipf(a.zipf), a.keys, a.batch, a.batches, 2),
    ];
    let mut report = String::new();
    writeln!(
        report,
        "{} keys, {} batches x {} records per run, window {} batches, {} interleaved rounds",
        a.keys, a.batches, a.batch, a.window, a.runs
    )?;
    for w in &workloads {
        writeln!(
            report,
            "- {}: {:.0} distinct keys per batch on average, {} distinct keys in the run",
            w.dist.name(),
            w.distinct_per_batch,
            w.distinct_total
        )?;
        if a.only.is_none() {
            check(&env, w)?;
        }
    }

    // Timed rounds: every design on every distribution, the order rotated
    // each round.
    let mut results: BTreeMap<(usize, Design), Vec<(Split, f64)>> = BTreeMap::new();
    let mut raw = String::from("round,dist,design,ns_per_record,pre,call,post,fire,output_bytes\n");
    for round in 0..a.runs {
        for (wi, w) in workloads.iter().enumerate() {
            let mut order: Vec<Design> = Design::ALL
                .into_iter()
                .filter(|d| a.only.as_ref().is_none_or(|o| d.baseline() == *d || o.split(',').any(|n| n == format!("{d:?}"))))
                .collect();
            let n = order.len();
            order.rotate_left((round * 2 + wi) % n);
            let mut this: BTreeMap<Design, Split> = BTreeMap::new();
            for d in order {
                let (s, bytes) = run(&env, d, w)?;
                let r = w.records as f64;
                writeln!(
                    raw,
                    "{round},{},{d:?},{:.1},{:.1},{:.1},{:.1},{:.1},{bytes}",
                    w.dist.name(),
                    s.total as f64 / r,
                    s.pre as f64 / r,
                    s.call as f64 / r,
                    s.post as f64 / r,
                    s.fire as f64 / r
                )?;
                this.insert(d, s);
            }
            for (&d, s) in &this {
                let base = this[&d.baseline()].total as f64;
                results.entry((wi, d)).or_default().push((*s, base / s.total as f64));
            }
        }
        eprintln!("round {} of {} done", round + 1, a.runs);
    }

    writeln!(report, "\n| design | distribution | ns/record, median (range) | x native, median (range) | split ns/record: pre / call / post / fire |")?;
    writeln!(report, "|---|---|---|---|---|")?;
    for (wi, w) in workloads.iter().enumerate() {
        for d in Design::ALL {
            let Some(v) = results.get(&(wi, d)) else { continue };
            let r = w.records as f64;
            let mut t: Vec<f64> = v.iter().map(|(s, _)| s.total as f64 / r).collect();
            let (lo, hi) = range(&t);
            let med = median(&mut t);
            let mut x: Vec<f64> = v.iter().map(|(_, x)| *x).collect();
            let (xlo, xhi) = range(&x);
            let xm = median(&mut x);
            let part = |f: fn(&Split) -> u64| {
                let mut p: Vec<f64> = v.iter().map(|(s, _)| f(s) as f64 / r).collect();
                median(&mut p)
            };
            writeln!(
                report,
                "| {} | {} | {med:.0} ({lo:.0}-{hi:.0}) | {xm:.2} ({xlo:.2}-{xhi:.2}) | {:.0} / {:.0} / {:.0} / {:.0} |",
                d.name(),
                w.dist.name(),
                part(|s| s.pre),
                part(|s| s.call),
                part(|s| s.post),
                part(|s| s.fire),
            )?;
        }
    }

    if a.only.is_some() {
        print!("{report}");
        return Ok(());
    }
    // Traps: a poison record at index batch/2 of a batch, after 8 warm batches.
    writeln!(report, "\nTrap (poison record {} of a {}-record batch), median of {} trials, microseconds:\n", a.batch / 2, a.batch, a.trap_trials)?;
    writeln!(report, "| design | distribution | trapping call | discard writes + drop store | fresh instance | total | same batch, no trap |")?;
    writeln!(report, "|---|---|---|---|---|---|---|")?;
    for w in &workloads {
        let ok = &w.batches[8];
        let poison = workload::poison(ok, a.batch / 2);
        let poison0 = workload::poison(ok, 0);
        let warm = &w.batches[..8];
        let mut costs: BTreeMap<&str, Vec<trap::TrapCost>> = BTreeMap::new();
        for _ in 0..a.trap_trials {
            for (name, mode, bad) in [
                ("A, overlay", Some(WriteMode::Overlay), &poison),
                ("A, undo log", Some(WriteMode::Undo), &poison),
                ("B", None, &poison),
                ("B, poison at record 0 (the trap alone)", None, &poison0),
            ] {
                let c = match mode {
                    Some(m) => trap::trap_a(&rt, &env.a, m, warm, ok, bad, env.template.clone())?.1,
                    None => trap::trap_b(&rt, &env.b, warm, ok, bad, env.template.clone())?.1,
                };
                costs.entry(name).or_default().push(c);
            }
        }
        for (name, v) in &costs {
            let m = |f: fn(&trap::TrapCost) -> u64| {
                let mut p: Vec<f64> = v.iter().map(|c| f(c) as f64 / 1000.0).collect();
                median(&mut p)
            };
            let mut tot: Vec<f64> = v.iter().map(|c| (c.call + c.discard + c.fresh) as f64 / 1000.0).collect();
            writeln!(
                report,
                "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                w.dist.name(),
                m(|c| c.call),
                m(|c| c.discard),
                m(|c| c.fresh),
                median(&mut tot),
                m(|c| c.ok_call)
            )?;
        }
    }
    writeln!(report, "\n(state digest checked equal before and after every trap)")?;
    print!("{report}");
    std::fs::create_dir_all("results")?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    std::fs::write(format!("results/raw-{stamp}.csv"), raw)?;
    std::fs::write(format!("results/summary-{stamp}.md"), report)?;
    Ok(())
}
